"""The unit of work on a real database: its messages commit with its state change or not at all,
and the relay is woken only after a commit that wrote some."""

from __future__ import annotations

import asyncio

import pytest

from libs.outbox.store import NOTIFY_CHANNEL
from libs.outbox.unit_of_work import unit_of_work
from libs.pg.pool import connect, connection
from libs.testing.waiting import wait_until

from .support import NOTES_DDL, REGISTRY, Noted


async def _listening(dsn: str) -> tuple[object, list[str]]:
    listener = await connect(dsn)
    heard: list[str] = []
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: heard.append(args[2]))
    return listener, heard


async def _rows(conn: object, query: str) -> int:
    return int(await conn.fetchval(query))  # type: ignore[attr-defined]


async def test_a_committed_unit_writes_its_state_and_messages_together_and_wakes_the_relay(
    pg_dsn: str,
) -> None:
    conn = await connect(pg_dsn)
    listener, heard = await _listening(pg_dsn)
    try:
        await conn.execute(NOTES_DDL)
        async with unit_of_work(conn) as uow:
            await conn.execute("INSERT INTO notes VALUES ('a', 1)")
            envelope = REGISTRY.envelope(Noted(key="a", seq=1), source="/test")
            uow.add(envelope, exchange="test.events", aggregate_type="note", aggregate_id="a")
            # the state change is not visible to others before the commit
            assert await _rows(listener, "SELECT count(*) FROM notes") == 0
        assert uow.written == 1
        assert await _rows(listener, "SELECT count(*) FROM notes") == 1
        ids = await listener.fetch("SELECT message_id::text FROM outbox")
        assert [r["message_id"] for r in ids] == [envelope.id]
        await wait_until(lambda: heard, timeout=10, interval=0.02)
        assert heard == [NOTIFY_CHANNEL]
    finally:
        await conn.close()
        await listener.close()


async def test_a_failed_unit_leaves_no_state_no_message_and_wakes_nobody(pg_dsn: str) -> None:
    conn = await connect(pg_dsn)
    listener, heard = await _listening(pg_dsn)
    try:
        await conn.execute(NOTES_DDL)
        with pytest.raises(RuntimeError, match="handler broke"):
            async with unit_of_work(conn) as uow:
                await conn.execute("INSERT INTO notes VALUES ('b', 1)")
                envelope = REGISTRY.envelope(Noted(key="b", seq=1), source="/test")
                uow.add(envelope, exchange="test.events", aggregate_type="note", aggregate_id="b")
                raise RuntimeError("handler broke")
        assert await _rows(listener, "SELECT count(*) FROM notes") == 0
        assert await _rows(listener, "SELECT count(*) FROM outbox") == 0
        # a unit without messages, and one told not to wake, notify nobody either
        async with unit_of_work(conn) as empty:
            await conn.execute("INSERT INTO notes VALUES ('c', 1)")
        async with unit_of_work(conn, wake=False) as quiet:
            envelope = REGISTRY.envelope(Noted(key="d", seq=1), source="/test")
            quiet.add(envelope, exchange="test.events", aggregate_type="note", aggregate_id="d")
        assert (empty.written, quiet.written) == (0, 1)
        await asyncio.sleep(0.3)
        assert heard == []
    finally:
        await conn.close()
        await listener.close()


async def test_the_relay_is_woken_after_the_commit_not_inside_the_transaction(pg_dsn: str) -> None:
    from libs.outbox.relay import Wakeup

    seen: list[bool] = []

    class Recording(Wakeup):
        async def after_commit(self, conn: object, *_: object, **__: object) -> None:
            seen.append(conn.is_in_transaction())  # type: ignore[attr-defined]

    async with connection(pg_dsn) as conn:
        async with unit_of_work(conn, Recording(None)) as uow:
            envelope = REGISTRY.envelope(Noted(key="e", seq=1), source="/test")
            uow.add(envelope, exchange="test.events", aggregate_type="note", aggregate_id="e")
        assert seen == [False]


async def test_a_pooled_connection_goes_back_without_a_reset_round_trip_and_rolled_back(
    pg_dsn: str,
) -> None:
    from libs.pg.pool import create_pool

    sent: list[str] = []
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen (n int)")
            # left open on purpose: the release must still roll it back
            await conn.execute("BEGIN; INSERT INTO seen VALUES (1)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM seen") == 0
        resets = [q for q in sent if "unlock_all" in q or "RESET ALL" in q]
        assert resets == [], sent  # asyncpg's default sends one on every release
    finally:
        await pool.close()
