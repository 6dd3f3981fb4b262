"""Rows handed to the relay by their writer: published without a claim, in per-aggregate order,
and never twice when a claim took them meanwhile.

A writer in the process whose relay leads hands it the rows it just committed; the relay
publishes them and marks them in one statement. A row is handed only when no earlier row of its
aggregate is unpublished (the insert says so in the same statement); otherwise the relay claims,
so an aggregate's rows still reach the broker in outbox order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from libs.errors import PublishError
from libs.messaging.publisher import Outgoing, Publisher
from libs.outbox import store
from libs.outbox.relay import HANDED_MAX, OutboxRelay, Wakeup
from libs.outbox.store import OutboxWriter
from libs.outbox.unit_of_work import unit_of_work
from libs.pg.pool import Conn, connect
from libs.testing.waiting import wait_until

from .support import (
    FAST_RELAY,
    REGISTRY,
    WATCH,
    FlakyPublisher,
    Noted,
    collect,
    running_relay,
    stack,
    write_events,
)

pytestmark = pytest.mark.integration


async def commit(conn: Conn, relay: OutboxRelay, *events: Noted) -> list[str]:
    """Commit ``events`` as one writer in the relay's process would (handed over when it can)."""
    ids = []
    async with unit_of_work(conn, Wakeup(relay)) as uow:
        for event in events:
            envelope = REGISTRY.envelope(event, source="/test", subject=event.key)
            uow.add(envelope, exchange="test.events", aggregate_type="note", aggregate_id=event.key)
            ids.append(envelope.id)
    return ids


async def idle_leader(relay: OutboxRelay) -> None:
    await wait_until(lambda: relay.is_leader and relay.claims >= 1, timeout=10)
    await asyncio.sleep(0.1)  # its catch-up claim found nothing and is over


async def unpublished(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def test_rows_handed_over_are_published_once_without_a_claim(
    amqp_url: str, pg_dsn: str
) -> None:
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        async with running_relay(s, pg_dsn) as relay:  # its sweep is a minute away
            await idle_leader(relay)
            claims = relay.claims
            ids = []
            for i in range(20):
                ids += await commit(conn, relay, Noted(key=f"k{i}", seq=0))
            got = await collect(s.connection, WATCH, count=20, timeout=5)
            await wait_until(lambda: relay.published >= 20, timeout=5)
            assert relay.claims == claims  # not one claim query for them
            assert await unpublished(conn) == 0  # and each marked published
        got += await collect(s.connection, WATCH, count=1, timeout=0.3)
        assert sorted(m.message_id for m in got) == sorted(ids)  # each once
        await conn.close()


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
async def test_a_row_behind_an_unpublished_row_of_its_aggregate_waits_for_it(
    amqp_url: str, pg_dsn: str, guarded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``unguarded`` is the check breaking on purpose: with the insert's guard removed, the
    later row is handed over and overtakes the earlier one, which waits for the sweep."""
    if not guarded:
        monkeypatch.setattr(
            store, "_INSERT", store._INSERT.replace("EXISTS (", "false AND EXISTS (", 1)
        )
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        async with running_relay(s, pg_dsn) as relay:
            await idle_leader(relay)
            # x0 committed where no relay hears of it (another replica whose NOTIFY is late)
            [first] = await write_events(conn, [Noted(key="x", seq=0)], notify=False)
            [second] = await commit(conn, relay, Noted(key="x", seq=1))
            got = await collect(s.connection, WATCH, count=2, timeout=5)  # sweep: a minute
        order = [m.message_id for m in got]
        if guarded:
            assert order == [first, second]
        else:
            assert order == [second], order  # x1 went first; x0 waits for the sweep
        await conn.close()


@dataclass
class Meddling:
    """The real publisher; during its first publish another writer commits and hands a row."""

    real: Publisher
    during_first: Any
    sent: list[str] = field(default_factory=list)
    handed: list[str] = field(default_factory=list)

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        if not self.handed:
            self.handed += await self.during_first()
        self.sent += [m.message_id for m in messages]
        return await self.real.publish_many(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_handed_row_that_a_claim_took_meanwhile_is_not_sent_again(
    amqp_url: str, pg_dsn: str
) -> None:
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        other = await connect(pg_dsn)
        # two rows wait from before the relay starts: its catch-up claims them one at a time,
        # and while the first is being published a writer commits and hands over a third
        backlog = await write_events(conn, [Noted(key="a", seq=0), Noted(key="b", seq=0)])
        relay_box: list[OutboxRelay] = []

        async def hand_one() -> list[str]:
            return await commit(other, relay_box[0], Noted(key="c", seq=0))

        meddling = Meddling(s.publisher, hand_one)
        s.publisher = meddling  # type: ignore[assignment]
        settings = FAST_RELAY.model_copy(update={"batch_size": 1})
        async with running_relay(s, pg_dsn, settings=settings) as relay:
            relay_box.append(relay)
            got = await collect(s.connection, WATCH, count=3, timeout=5)
            await wait_until(lambda: relay.published >= 3, timeout=5)
            await asyncio.sleep(0.3)
        got += await collect(s.connection, WATCH, count=1, timeout=0.3)
        assert sorted(m.message_id for m in got) == sorted(backlog + meddling.handed)
        assert sorted(meddling.sent) == sorted(backlog + meddling.handed)  # c sent once
        await conn.close()
        await other.close()


async def test_two_rows_of_one_aggregate_handed_together_keep_their_order_when_the_first_fails(
    amqp_url: str, pg_dsn: str
) -> None:
    """One transaction writes x0 and x1: neither is held back (they are inserted together), so
    both are handed over; batches of one put them in two batches. x0 is nacked once: x1 must
    wait for x0's retry, not go out in the next handed batch."""
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        flaky = FlakyPublisher(s.publisher, victim="", mode="drop-nack")
        s.publisher = flaky  # type: ignore[assignment]
        settings = FAST_RELAY.model_copy(update={"batch_size": 1, "retry_base": 0.2})
        async with running_relay(s, pg_dsn, settings=settings) as relay:
            await idle_leader(relay)
            writer_ids: list[str] = []
            async with unit_of_work(conn, Wakeup(relay)) as uow:
                for seq in (0, 1):
                    envelope = REGISTRY.envelope(Noted(key="x", seq=seq), source="/t", subject="x")
                    uow.add(
                        envelope, exchange="test.events", aggregate_type="note", aggregate_id="x"
                    )
                    writer_ids.append(envelope.id)
                flaky.victim = writer_ids[0]
            assert len(uow.flushed) == 2  # both handed over
            got = await collect(s.connection, WATCH, count=2, timeout=5)
        assert [m.message_id for m in got] == writer_ids
        await conn.close()


async def test_the_safety_sweep_runs_while_hand_offs_keep_the_relay_busy(
    amqp_url: str, pg_dsn: str
) -> None:
    """A row nobody woke the relay for (committed without a wake-up) is claimed by the sweep
    even though rows are handed over more often than the sweep interval."""
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        settings = FAST_RELAY.model_copy(update={"sweep_interval": 0.5})
        async with running_relay(s, pg_dsn, settings=settings) as relay:
            await idle_leader(relay)
            [forgotten] = await write_events(conn, [Noted(key="f", seq=0)], notify=False)
            seen: list[str] = []
            for i in range(25):  # 2.5 s of hand-offs, one every 0.1 s
                await commit(conn, relay, Noted(key=f"busy{i}", seq=0))
                seen += [
                    m.message_id for m in await collect(s.connection, WATCH, count=1, timeout=0.1)
                ]
            seen += [
                m.message_id for m in await collect(s.connection, WATCH, count=30, timeout=0.5)
            ]
        assert forgotten in seen
        await conn.close()


async def test_a_row_handed_over_after_a_claim_sent_it_is_not_sent_again(
    amqp_url: str, pg_dsn: str
) -> None:
    """A writer that committed before a claim but resumed after it hands over a row already
    published: the relay remembers what it claimed and drops it."""
    async with stack(amqp_url, pg_dsn) as s:
        conn = await connect(pg_dsn)
        async with running_relay(s, pg_dsn) as relay:
            await idle_leader(relay)
            writer = OutboxWriter()
            async with conn.transaction():
                envelope = REGISTRY.envelope(Noted(key="s", seq=0), source="/t", subject="s")
                writer.add(
                    envelope, exchange="test.events", aggregate_type="note", aggregate_id="s"
                )
                await writer.flush(conn)
            relay.wake()  # a claim takes it before the writer gets round to handing it over
            first = await collect(s.connection, WATCH, count=1, timeout=3)
            assert [m.message_id for m in first] == [envelope.id]
            assert relay.hand(writer.flushed)
            again = await collect(s.connection, WATCH, count=1, timeout=0.5)
        assert again == []
        await conn.close()


def test_the_hand_off_is_refused_when_not_leading_or_full() -> None:
    relay = OutboxRelay(name="t", dsn="postgresql://unused", publisher=None)  # type: ignore[arg-type]
    row = store.OutboxRow(
        id=1, message_id="m", message_type="t", aggregate_type="a", aggregate_id="1",
        exchange="e", routing_key="k", payload=b"", headers={}, created_at=None, attempts=0,
    )  # type: ignore[arg-type]  # fmt: skip
    assert not relay.hand([row])  # not leading: the rows are left to the leader's claim
    relay._leader = True  # as once it holds the lead
    full = HANDED_MAX * relay._settings.batch_size
    assert relay.hand([row] * full)
    assert not relay.hand([row])  # holding that many already: the backlog stays in the table
