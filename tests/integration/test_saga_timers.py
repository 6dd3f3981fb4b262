"""The saga deadline timer against a real database: no busy loop, no silent death (issue #12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import REGISTRY
from libs.outbox.relay import Wakeup
from libs.pg.pool import connect, connection, create_pool
from libs.saga import store
from libs.saga.engine import start
from libs.saga.runtime import SagaCoordinator
from libs.testing.infra import temporary_database
from libs.testing.waiting import wait_until
from saga.domain.order_saga import order_saga
from tests.orders import order_created

pytestmark = pytest.mark.integration
SAGA = order_saga(deadline=10, retries=2)


@asynccontextmanager
async def saga_db() -> AsyncIterator[str]:
    async with temporary_database(prefix="oftimer", migrations=store.migrations()) as dsn:
        yield dsn


async def seed_overdue(dsn: str, *, due_in: float = -3600.0) -> str:
    """An instance whose step deadline passed an hour ago (or comes in ``due_in`` seconds)."""
    created = order_created()
    order_id = created.order_id
    step = SAGA.steps[0].deadline
    t = start(SAGA, created, now=datetime.now(UTC) + timedelta(seconds=due_in - step))
    async with connection(dsn) as conn:
        assert await store.insert(
            conn, saga=SAGA.name, state=t.state, traceparent=None, entries=t.log
        )
    return order_id


def counting_claims(monkeypatch: pytest.MonkeyPatch, *, fail_first: int = 0) -> list[datetime]:
    """Record every claim the timer makes; the first ``fail_first`` claims raise."""
    calls: list[datetime] = []
    real: Callable[..., Awaitable[Any]] = store.claim_due

    async def claim_due(conn: Any, **kwargs: Any) -> Any:
        calls.append(datetime.now(UTC))
        if len(calls) <= fail_first:
            raise RuntimeError(f"injected failure {len(calls)}")
        return await real(conn, **kwargs)

    monkeypatch.setattr(store, "claim_due", claim_due)
    return calls


@asynccontextmanager
async def running_timers(
    dsn: str, *, sweep: float = 1.0
) -> AsyncIterator[tuple[SagaCoordinator, asyncio.Task[None]]]:
    pool = await create_pool(dsn, max_size=2)
    coordinator = SagaCoordinator(SAGA, registry=REGISTRY, source="/test/saga", sweep=sweep)
    task = asyncio.create_task(coordinator.run_timers(pool, Wakeup(None)))
    try:
        yield coordinator, task
    finally:
        coordinator.stop()
        with suppress(BaseException):
            await asyncio.wait_for(task, 5)
        await pool.close()


async def test_a_due_instance_locked_elsewhere_does_not_make_the_timer_spin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with saga_db() as dsn:
        order_id = await seed_overdue(dsn)
        holder = await connect(dsn)
        tx = holder.transaction()
        await tx.start()
        # a reply being handled holds the instance: the timer's claim skips it
        await holder.execute("SELECT 1 FROM saga_instance WHERE id = $1 FOR UPDATE", order_id)
        calls = counting_claims(monkeypatch)
        async with running_timers(dsn, sweep=1.0) as (coordinator, task):
            await wait_until(lambda: len(calls) >= 1, timeout=3)  # the first sweep
            before = len(calls)
            await asyncio.sleep(1.0)
            in_one_second = len(calls) - before
            assert coordinator.fired == 0 and not task.done()
            # the old timer claimed thousands of times a second here (next_deadline in the past,
            # so a zero timeout); now it pauses 0.05 s, doubling up to the 1 s sweep
            assert 2 <= in_one_second <= 12, in_one_second
            await tx.rollback()
            # released: fired within the longest pause (the sweep) plus a little
            await wait_until(lambda: coordinator.fired == 1, timeout=3)
        check = await connect(dsn)
        row = await store.get_instance(check, saga=SAGA.name, saga_id=order_id)
        assert row is not None and row.attempt == 2  # sent, then re-sent once by the deadline
        assert row.deadline_at is not None and row.deadline_at > datetime.now(UTC)
        await check.close()
        await holder.close()


async def test_a_locked_instance_does_not_delay_the_deadlines_of_the_others() -> None:
    """While one overdue instance is held elsewhere the timer pauses for it, longer each round,
    but another instance's deadline still fires on time, not at the end of a pause."""
    async with saga_db() as dsn:
        held_id = await seed_overdue(dsn)
        seeded = asyncio.get_running_loop().time()  # the deadline: 4 s after this, or a hair more
        await seed_overdue(dsn, due_in=4.0)
        holder = await connect(dsn)
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM saga_instance WHERE id = $1 FOR UPDATE", held_id)
        try:
            async with running_timers(dsn, sweep=10.0) as (coordinator, _):
                await wait_until(lambda: coordinator.fired == 1, timeout=8, interval=0.02)
                # on time, from the deadline itself (however long the setup took), not at the
                # end of a pause for the held one (those grow to seconds by then)
                took = asyncio.get_running_loop().time() - seeded
                assert 3.9 <= took <= 4.8, took
        finally:
            await tx.rollback()
            await holder.close()


async def test_the_timer_survives_errors_and_then_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    async with saga_db() as dsn:
        await seed_overdue(dsn)
        calls = counting_claims(monkeypatch, fail_first=3)
        async with running_timers(dsn, sweep=0.2) as (coordinator, task):
            await wait_until(lambda: coordinator.fired == 1, timeout=10)
            # three failures, each followed by a backed-off pause, then the claim that fired
            assert 4 <= len(calls) < 20 and not task.done()
            await asyncio.sleep(0.5)
            assert not task.done()  # and it keeps running after the success
