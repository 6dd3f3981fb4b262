"""``orderflow bench relay``: the outbox relay against raw publish-with-confirms, in one run.

Figures:
- raw: aio-pika publish with confirms to a quorum queue, windows of 256 in flight (msg/s);
- relay drain: rows already committed, relay started, time until all are confirmed (msg/s);
- latency commit → confirmed publish at low load (100 msg/s, one row per transaction), for the
  NOTIFY wake-up, the in-process wake-up and a 50 ms polling relay;
- idle database load of each relay (transactions/s over a quiet window, from pg_stat_database);
- commit rate with 4 writers for the three ways of waking the relay (LISTEN/NOTIFY is a wake-up hint: docs/architecture.md).
Everything runs in a throw-away vhost and database on the configured broker and server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from libs.messages.envelope import Envelope
from libs.messages.registry import Event, MessageRegistry
from libs.messaging.connection import connect as amqp_connect
from libs.messaging.publisher import Outgoing, Publisher
from libs.messaging.topology import Binding, QueueSpec, Topology, declare
from libs.outbox.relay import OutboxRelay, Wakeup
from libs.outbox.store import NOTIFY_CHANNEL, OutboxWriter
from libs.outbox.unit_of_work import unit_of_work
from libs.pg.pool import Conn, connect, create_pool
from libs.settings import RelaySettings
from libs.testing.infra import temporary_database, temporary_vhost
from orderflow.bench.stats import percentile, writers_rate


class BenchEvent(Event):
    TYPE = "bench.happened.v1"
    order_id: str
    n: int
    note: str


REGISTRY = MessageRegistry(BenchEvent)
TOPOLOGY = Topology(
    exchanges=("bench.events",),
    queues=(QueueSpec("bench.sink", (Binding("bench.events", "#"),)),),
)
NOTE = "x" * 200  # a body of about 450 bytes, like orderflow's own events


def _envelope(n: int) -> Envelope:
    order_id = str(uuid.uuid4())
    return REGISTRY.envelope(
        BenchEvent(order_id=order_id, n=n, note=NOTE), source="/bench", subject=order_id
    )


def _write(writer: OutboxWriter, n: int) -> str:
    envelope = _envelope(n)
    writer.add(
        envelope,
        exchange="bench.events",
        aggregate_type="bench",
        aggregate_id=envelope.subject or "",
    )
    return envelope.id


@dataclass
class Env:
    amqp_url: str
    dsn: str
    connection: Any
    publisher: Publisher


@contextlib.asynccontextmanager
async def bench_env(amqp_base: str, admin_dsn: str) -> AsyncIterator[Env]:
    async with (
        temporary_vhost(amqp_base, prefix="ofbench") as url,
        temporary_database(admin_dsn, prefix="ofbench") as dsn,
    ):
        connection = await amqp_connect(url, name="bench")
        channel = await connection.channel()
        await declare(channel, TOPOLOGY)
        publisher = Publisher(connection)
        try:
            yield Env(url, dsn, connection, publisher)
        finally:
            await publisher.close()
            await channel.close()
            await connection.close()


async def purge(env: Env) -> None:
    channel = await env.connection.channel()
    queue = await channel.get_queue("bench.sink")
    await queue.purge()
    await channel.close()


def outgoing(count: int) -> list[Outgoing]:
    """``count`` ready-to-publish benchmark events (built before any clock starts)."""
    from libs.messages import codec

    return [
        Outgoing(
            exchange="bench.events",
            routing_key="bench.happened.v1",
            body=codec.encode(e),
            message_id=e.id,
            type=e.type,
            timestamp=e.time,
        )
        for e in (_envelope(i) for i in range(count))
    ]


async def raw_publish_rate(env: Env, *, count: int, window: int = 256) -> float:
    """aio-pika publish with confirms, ``window`` messages in flight."""
    messages = outgoing(count)
    started = time.perf_counter()
    for start in range(0, count, window):
        outcomes = await env.publisher.publish_many(messages[start : start + window])
        assert all(o is None for o in outcomes), outcomes
    rate = count / (time.perf_counter() - started)
    await purge(env)
    return rate


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    task = asyncio.create_task(relay.run())
    deadline = time.monotonic() + 10
    while not relay.is_leader and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    try:
        yield relay
    finally:
        relay.stop()
        await task


async def pending(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def relay_drain_rate(env: Env, *, count: int, batch_size: int) -> float:
    conn = await connect(env.dsn)
    await conn.execute("TRUNCATE outbox")
    for start in range(0, count, 1000):
        async with unit_of_work(conn, wake=False) as uow:  # drained by a relay started later
            for n in range(start, min(count, start + 1000)):
                _write(uow, n)
    relay = OutboxRelay(
        name="drain",
        dsn=env.dsn,
        publisher=env.publisher,
        settings=RelaySettings(batch_size=batch_size, sweep_interval=60),
    )
    started = time.perf_counter()
    async with running(relay):
        while relay.published < count:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
    assert await pending(conn) == 0
    await conn.close()
    await purge(env)
    return count / elapsed


async def relay_latency(env: Env, *, mode: str, count: int, rate: float) -> dict[str, float]:
    """Commit → confirmed-publish latency, one row per transaction at ``rate`` per second."""
    conn = await connect(env.dsn)
    await conn.execute("TRUNCATE outbox")
    settings = RelaySettings(sweep_interval=0.05 if mode == "poll-50ms" else 5.0)
    relay = OutboxRelay(
        name=mode,
        dsn=env.dsn,
        publisher=env.publisher,
        settings=settings,
        listen=mode != "poll-50ms",
    )
    wakeup = Wakeup(relay if mode == "in-process" else None)
    committed: dict[str, float] = {}
    async with running(relay):
        interval = 1 / rate
        next_at = time.perf_counter()
        for n in range(count):
            async with unit_of_work(conn, wakeup, wake=mode != "poll-50ms") as uow:
                message_id = _write(uow, n)
            committed[message_id] = time.time()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        while await pending(conn):
            await asyncio.sleep(0.05)
    rows = await conn.fetch(
        "SELECT message_id::text, extract(epoch FROM published_at) AS at FROM outbox"
    )
    latencies = [(float(r["at"]) - committed[r["message_id"]]) * 1000 for r in rows]
    await conn.close()
    await purge(env)
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }


async def _transactions(conn: Conn) -> int:
    return int(
        await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
    )


async def idle_load(env: Env, *, listen: bool, sweep: float, seconds: float) -> float:
    """Transactions per second the relay alone causes while nothing is written."""
    observer = await connect(env.dsn)
    relay = OutboxRelay(
        name="idle",
        dsn=env.dsn,
        publisher=env.publisher,
        settings=RelaySettings(sweep_interval=sweep),
        listen=listen,
    )
    async with running(relay):
        await asyncio.sleep(12)  # statistics of idle backends are flushed every 10 s
        before = await _transactions(observer)
        await asyncio.sleep(seconds)
        after = await _transactions(observer)
    await observer.close()
    # the observer's own two queries count too
    return max(0.0, (after - before - 1) / seconds)


TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION bench_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); RETURN NULL; END $$;
CREATE TRIGGER bench_outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION bench_outbox_notify();
"""


async def commit_rate(env: Env, *, mode: str, writers: int, seconds: float) -> float:
    """Transactions/s of ``writers`` concurrent writers, one outbox row each, relay running."""
    pool = await create_pool(env.dsn, min_size=writers, max_size=writers)
    admin = await connect(env.dsn)
    await admin.execute("TRUNCATE outbox")
    if mode == "trigger":
        await admin.execute(TRIGGER_SQL)
    relay = OutboxRelay(
        name=f"commit-{mode}",
        dsn=env.dsn,
        publisher=env.publisher,
        settings=RelaySettings(sweep_interval=5.0),
    )
    wakeup = Wakeup(relay if mode == "in-process" else None)
    wake = mode in ("after-commit", "in-process")

    async def write(conn: Conn, n: int) -> None:
        async with unit_of_work(conn, wakeup, wake=wake) as uow:
            _write(uow, n)

    async with running(relay):
        rate = await writers_rate(pool, writers=writers, seconds=seconds, write=write)
        while await pending(admin):
            await asyncio.sleep(0.05)
    if mode == "trigger":
        await admin.execute("DROP TRIGGER bench_outbox_notify ON outbox")
    await admin.close()
    await pool.close()
    await purge(env)
    return rate


async def run(*, amqp_base: str, admin_dsn: str, quick: bool) -> dict[str, Any]:
    count = 5_000 if quick else 20_000
    low_load = 200 if quick else 1000
    idle_window = 10.0 if quick else 30.0
    results: dict[str, Any] = {}
    async with bench_env(amqp_base, admin_dsn) as env:
        await raw_publish_rate(env, count=1000)  # warm-up
        results["raw_publish_confirms_msg_s"] = await raw_publish_rate(env, count=count)
        results["relay_drain_msg_s"] = await relay_drain_rate(env, count=count, batch_size=256)
        results["relay_vs_raw"] = (
            results["relay_drain_msg_s"] / results["raw_publish_confirms_msg_s"]
        )
        results["latency_low_load"] = {
            mode: await relay_latency(env, mode=mode, count=low_load, rate=100)
            for mode in ("notify", "in-process", "poll-50ms")
        }
        results["idle_tx_per_s"] = {
            "listen+5s-sweep": await idle_load(env, listen=True, sweep=5.0, seconds=idle_window),
            "poll-50ms": await idle_load(env, listen=False, sweep=0.05, seconds=idle_window),
        }
        results["commit_rate_4_writers_tx_s"] = {
            mode: await commit_rate(env, mode=mode, writers=4, seconds=5 if quick else 10)
            for mode in ("in-process", "after-commit", "trigger")
        }
    return results
