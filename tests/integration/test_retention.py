"""Retention against a real database: what is past its horizon goes, in bounded batches, and
nothing younger or still running is touched; only the relay leader prunes; the saga gauges."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.inbox import store as inbox
from libs.outbox import store as outbox
from libs.pg.pool import connection, create_pool
from libs.saga import store as sagas
from libs.saga.engine import start
from libs.service.upkeep import Pruner, prune_once, pruners, run_retention
from libs.settings import RetentionSettings
from libs.testing.infra import temporary_database
from libs.testing.waiting import wait_until
from saga.domain.order_saga import order_saga
from tests.orders import order_created

pytestmark = pytest.mark.integration
SAGA = order_saga(deadline=10, retries=2)
HOUR = 3600.0


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    migrations = [*outbox.migrations(), *inbox.migrations(), *sagas.migrations()]
    async with temporary_database(prefix="oftest_ret", migrations=migrations) as dsn:
        yield dsn


async def seed(dsn: str, *, old: int, young: int) -> dict[str, list[str]]:
    """``old`` rows of each kind two hours old, ``young`` ones a minute old; also one saga
    still running two hours after it started (never pruned)."""
    made: dict[str, list[str]] = {"sagas_old": [], "sagas_young": [], "running": []}
    async with connection(dsn) as conn:
        for n, age in [(i, 2 * HOUR) for i in range(old)] + [(i, 60.0) for i in range(young)]:
            at = datetime.now(UTC) - timedelta(seconds=age)
            await conn.execute(
                """INSERT INTO outbox (message_id, exchange, routing_key, message_type,
                                       aggregate_type, aggregate_id, payload, headers,
                                       created_at, published_at)
                   VALUES ($1, 'x', 'k', 't', 'a', $2, '{}'::bytea, '{}'::jsonb, $3, $3)""",
                str(uuid.uuid4()),
                str(n),
                at,
            )
            await conn.execute(
                "INSERT INTO inbox (consumer, message_id, message_type, processed_at)"
                " VALUES ('svc', $1, 't', $2)",
                uuid.uuid4(),
                at,
            )
            saga_id = await _saga(conn, ended=True, at=at)
            made["sagas_old" if age > HOUR else "sagas_young"].append(saga_id)
        made["running"].append(
            await _saga(conn, ended=False, at=datetime.now(UTC) - timedelta(hours=2))
        )
        # one unpublished row, however old, is never pruned
        await conn.execute(
            """INSERT INTO outbox (message_id, exchange, routing_key, message_type,
                                   aggregate_type, aggregate_id, payload, headers, created_at)
               VALUES ($1, 'x', 'k', 't', 'a', 'pending', '{}'::bytea, '{}'::jsonb, $2)""",
            str(uuid.uuid4()),
            datetime.now(UTC) - timedelta(days=30),
        )
    return made


async def _saga(conn: Any, *, ended: bool, at: datetime) -> str:
    created = order_created()
    order_id = created.order_id
    t = start(SAGA, created, now=at)
    await sagas.insert(conn, saga=SAGA.name, state=t.state, traceparent=None, entries=t.log)
    status = "COMPLETED" if ended else "RUNNING"
    await conn.execute(
        "UPDATE saga_instance SET status = $2, updated_at = $3, created_at = $3 WHERE id = $1",
        order_id,
        status,
        at,
    )
    return order_id


async def counts(dsn: str) -> dict[str, int]:
    async with connection(dsn) as conn:
        return {
            table: int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            for table in ("outbox", "inbox", "saga_instance", "saga_log")
        }


def every_kind(settings: RetentionSettings) -> list[Pruner]:
    return pruners(
        settings,
        [
            Pruner(
                "saga_instance",
                settings.sagas,
                functools.partial(sagas.prune_finished, saga=SAGA.name),
            )
        ],
    )


async def test_retention_deletes_what_is_past_its_horizon_in_batches_and_nothing_else() -> None:
    settings = RetentionSettings(outbox=HOUR, inbox=HOUR, sagas=HOUR, batch=4, pause=0)
    async with database() as dsn:
        made = await seed(dsn, old=10, young=3)
        before = await counts(dsn)
        pool = await create_pool(dsn, max_size=2)
        try:
            deleted = await prune_once(pool, every_kind(settings), settings)
        finally:
            await pool.close()
        after = await counts(dsn)
        assert deleted == 30  # 10 of each kind, in batches of 4
        assert after["outbox"] == before["outbox"] - 10 == 3 + 1  # the young and the pending
        assert after["inbox"] == 3
        assert after["saga_instance"] == 3 + 1  # the young ones and the running one
        async with connection(dsn) as conn:
            left = {r["id"] for r in await conn.fetch("SELECT id FROM saga_instance")}
            logs = {r["saga_id"] for r in await conn.fetch("SELECT saga_id FROM saga_log")}
        assert left == set(made["sagas_young"]) | set(made["running"])
        assert logs == left  # the log went with its instance, and only with it


async def test_a_horizon_longer_than_the_rows_age_deletes_nothing() -> None:
    settings = RetentionSettings(outbox=3 * HOUR, inbox=3 * HOUR, sagas=3 * HOUR)
    async with database() as dsn:
        await seed(dsn, old=5, young=2)
        before = await counts(dsn)
        pool = await create_pool(dsn, max_size=2)
        try:
            assert await prune_once(pool, every_kind(settings), settings) == 0
        finally:
            await pool.close()
        assert await counts(dsn) == before


class Relay:
    def __init__(self, leading: bool) -> None:
        self.is_leader = leading


@pytest.mark.parametrize("leading", [True, False])
async def test_only_the_relay_leader_prunes(leading: bool) -> None:
    settings = RetentionSettings(outbox=HOUR, inbox=HOUR, sagas=HOUR, interval=0.1)
    async with database() as dsn:

        async def inbox_pruned() -> bool:
            return (await counts(dsn))["inbox"] == 0

        await seed(dsn, old=3, young=0)
        pool = await create_pool(dsn, max_size=2)
        stopping = asyncio.Event()
        task = asyncio.create_task(
            run_retention(pool, Relay(leading), every_kind(settings), settings, stopping)  # type: ignore[arg-type]
        )
        try:
            # a leader prunes within a few rounds (seconds on a slow day); a standby never does
            if leading:
                await wait_until(inbox_pruned, timeout=10, interval=0.1)
            else:
                await asyncio.sleep(1.0)
        finally:
            stopping.set()
            await task
            await pool.close()
        left = await counts(dsn)
        assert (left["inbox"] == 0) is leading


async def test_the_saga_gauges_count_in_flight_stuck_and_the_oldest() -> None:
    async with database() as dsn:
        made = await seed(dsn, old=2, young=0)
        async with connection(dsn) as conn:
            series = await sagas.gauges(conn, saga=SAGA.name)
            by_name = {
                name: value for name, _, value in series if name != "orderflow.saga.in_flight"
            }
            in_flight = [(a, v) for n, a, v in series if n == "orderflow.saga.in_flight"]
            assert in_flight == [
                (
                    {
                        "orderflow.saga": SAGA.name,
                        "orderflow.saga.status": "RUNNING",
                        "orderflow.saga.step": SAGA.steps[0].name,
                    },
                    1,
                )
            ]
            assert by_name["orderflow.saga.overdue"] == 1  # its deadline passed long ago
            assert by_name["orderflow.saga.stuck"] == 1
            assert 2 * HOUR - 60 < by_name["orderflow.saga.oldest"] < 2 * HOUR + 60

            async def stuck_when(attempt: int) -> float:
                await conn.execute(
                    """UPDATE saga_instance SET attempt = $2,
                              deadline_at = clock_timestamp() + interval '1 hour' WHERE id = $1""",
                    made["running"][0],
                    attempt,
                )
                return {n: v for n, _, v in await sagas.gauges(conn, saga=SAGA.name)}[
                    "orderflow.saga.stuck"
                ]

            # the first send of a step, within its deadline, is not stuck; a re-send is
            assert await stuck_when(1) == 0
            assert await stuck_when(2) == 1
            await conn.execute(
                "UPDATE saga_instance SET status = 'COMPLETED' WHERE id = $1", made["running"][0]
            )
            series = await sagas.gauges(conn, saga=SAGA.name)
        assert [n for n, _, _ in series if n == "orderflow.saga.in_flight"] == []
        assert {n: v for n, _, v in series}["orderflow.saga.stuck"] == 0
