"""The machine's raw limits, measured (never derived), and whether they are plausible.

- publish with confirms to a quorum queue, 256 in flight;
- consume with acks from a quorum queue holding the messages (prefetch 256);
- publish and consume at once: a publisher with confirms and a consumer with acks on the same
  queue, the rate at which messages make the whole trip;
- asyncpg single-row commits with 4 connections;
- and, one at a time on a quiet machine, what every hop of a saga waits for at the least: a
  message from publish to delivery through a quorum queue (the services' queues) and through an
  exclusive classic queue without acks (the client's, for the last trip), and a transaction of
  the fewest statements any hop takes (BEGIN, an inbox row, one state write, an outbox row,
  COMMIT). A saga's critical path is its trips and transactions (:func:`critical_path`), so
  their sum is a floor under its latency at low load, whatever the services do.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from libs.pg.pool import create_pool
from orderflow.bench import relay as relay_bench
from orderflow.bench.stats import percentile, writers_rate

# Well below what a 2-core machine gives when nothing else runs (9,000 publishes/s, 8,000
# consumes/s, 12,000 commits/s measured here), well above a machine that is busy elsewhere.
FLOORS = {
    "raw_publish_confirms_msg_s": 2_000.0,
    "raw_consume_ack_msg_s": 2_000.0,
    "raw_publish_and_consume_msg_s": 1_000.0,
    "raw_pg_commits_4_conns_tx_s": 2_000.0,
}


def implausible(results: dict[str, Any]) -> list[str]:
    """The raw limits below their floor, as sentences."""
    return [
        f"{name} = {results[name]:,.0f}, below the {floor:,.0f} any quiet 2-core machine gives"
        for name, floor in FLOORS.items()
        if name in results and results[name] < floor
    ]


async def consume_rate(env: relay_bench.Env, *, count: int) -> float:
    """Consume-with-ack rate from a quorum queue holding ``count`` messages (prefetch 256)."""
    messages = relay_bench.outgoing(count)
    for start in range(0, count, 256):
        await env.publisher.publish_many(messages[start : start + 256])
    return await _consume(env, count=count, started=None)


async def publish_and_consume_rate(env: relay_bench.Env, *, count: int) -> float:
    """Messages/s through a queue with a publisher (confirms, 256 in flight) and a consumer
    (acks, prefetch 256) running at once: the trip every saga message makes."""
    messages = relay_bench.outgoing(count)
    started = time.perf_counter()

    async def publish() -> None:
        for start in range(0, count, 256):
            outcomes = await env.publisher.publish_many(messages[start : start + 256])
            assert all(o is None for o in outcomes), outcomes

    consumer = asyncio.create_task(_consume(env, count=count, started=started))
    await publish()
    return await consumer


async def _consume(env: relay_bench.Env, *, count: int, started: float | None) -> float:
    channel = await env.connection.channel()
    await channel.set_qos(prefetch_count=256)
    queue = await channel.get_queue("bench.sink")
    done = asyncio.Event()
    got = 0
    begin = started if started is not None else time.perf_counter()

    async def on_message(message: Any) -> None:
        nonlocal got
        await message.ack()
        got += 1
        if got >= count:
            done.set()

    tag = await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - begin
    await queue.cancel(tag)
    await channel.close()
    return count / elapsed


async def commit_rate(dsn: str, *, connections: int, seconds: float) -> float:
    pool = await create_pool(dsn, min_size=connections, max_size=connections)
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, v text)"
        )

    async def insert(conn: Any, _: int) -> None:
        await conn.execute("INSERT INTO bench_rows (v) VALUES ($1)", "x" * 100)

    rate = await writers_rate(pool, writers=connections, seconds=seconds, write=insert)
    await pool.close()
    return rate


QUIET_GAP_S = 0.01


def critical_path(steps: int) -> tuple[int, int]:
    """(broker trips, transactions) from placing an order to the client seeing it end, for a
    saga of ``steps`` steps (the order saga's: payment, inventory, approval): PlaceOrder,
    OrderCreated, then per step a command and its reply — the last reply, OrderConfirmed, is
    what the client sees; order_svc placing the order, the saga's start, per step the
    participant and the saga's handling of the reply, but the last one's, which is off the
    path."""
    return 2 + 2 * steps, 1 + 2 * steps


def _order_saga_path() -> tuple[int, int]:
    from saga.domain.order_saga import order_saga

    return critical_path(len(order_saga().steps))


TRIPS_PER_SAGA, TRANSACTIONS_PER_SAGA = _order_saga_path()


async def trip_latency_ms(env: relay_bench.Env, *, count: int, client: bool = False) -> float:
    """p50 of publish (with confirm) → delivery, one message at a time, 10 ms apart: through
    the quorum queue ``bench.sink`` with acks, or (``client``) through an exclusive classic
    queue without acks, as :class:`orderflow.client.OrderClient` receives its orders' ends. The
    delivery is timed as the consumer gets it, before it acks."""
    channel = await env.connection.channel()
    if client:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind("bench.events", routing_key="#")
    else:
        queue = await channel.get_queue("bench.sink")
    arrived: dict[str, float] = {}
    delivered = asyncio.Event()

    async def on_message(message: Any) -> None:
        arrived[message.message_id] = time.perf_counter()
        delivered.set()
        if not client:
            await message.ack()

    tag = await queue.consume(on_message, no_ack=client)
    trips = []
    for message in relay_bench.outgoing(count):
        delivered.clear()
        started = time.perf_counter()
        await env.publisher.publish(message)
        await asyncio.wait_for(delivered.wait(), 10)
        trips.append((arrived[message.message_id] - started) * 1000)
        await asyncio.sleep(QUIET_GAP_S)
    await queue.cancel(tag)
    await channel.close()
    if client:
        await relay_bench.purge(env)  # the same messages went to bench.sink too
    return percentile(trips, 50)


async def transaction_latency_ms(dsn: str, *, count: int) -> float:
    """p50 of the leanest hop transaction — BEGIN, an inbox row, one state write, an outbox
    row of a 450-byte message, COMMIT — one at a time, 10 ms apart. Every hop of a saga does at
    least this (the saga's start, the leanest, is exactly this)."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS bench_hop_inbox (id uuid PRIMARY KEY, kind text);
               CREATE TABLE IF NOT EXISTS bench_hop_state (id int PRIMARY KEY, v bigint);
               CREATE TABLE IF NOT EXISTS bench_hop_outbox (id bigserial PRIMARY KEY,
                                                             payload bytea);
               INSERT INTO bench_hop_state VALUES (1, 0) ON CONFLICT DO NOTHING"""
        )
        payload = b"x" * 450
        took = []
        for _ in range(count):
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO bench_hop_inbox VALUES (gen_random_uuid(), $1)", "hop"
                )
                await conn.execute("UPDATE bench_hop_state SET v = v + 1 WHERE id = 1")
                await conn.execute("INSERT INTO bench_hop_outbox (payload) VALUES ($1)", payload)
            took.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(QUIET_GAP_S)
    await pool.close()
    return percentile(took, 50)


def latency_floor_ms(results: dict[str, Any]) -> float | None:
    """A saga's trips (the last one the client's) and transactions, measured one at a time."""
    keys = ("raw_trip_p50_ms", "raw_client_trip_p50_ms", "raw_hop_transaction_p50_ms")
    if any(key not in results for key in keys):
        return None
    trip, client_trip, transaction = (float(results[key]) for key in keys)
    return (TRIPS_PER_SAGA - 1) * trip + client_trip + TRANSACTIONS_PER_SAGA * transaction


async def measure(env: relay_bench.Env, *, quick: bool) -> dict[str, float]:
    count = 5_000 if quick else 20_000
    await relay_bench.raw_publish_rate(env, count=1000)  # warm-up
    return {
        "raw_publish_confirms_msg_s": await relay_bench.raw_publish_rate(env, count=count),
        "raw_consume_ack_msg_s": await consume_rate(env, count=count),
        "raw_publish_and_consume_msg_s": await publish_and_consume_rate(env, count=count),
        "raw_pg_commits_4_conns_tx_s": await commit_rate(
            env.dsn, connections=4, seconds=3 if quick else 8
        ),
        "raw_trip_p50_ms": await trip_latency_ms(env, count=100 if quick else 300),
        "raw_client_trip_p50_ms": await trip_latency_ms(
            env, count=100 if quick else 300, client=True
        ),
        "raw_hop_transaction_p50_ms": await transaction_latency_ms(
            env.dsn, count=100 if quick else 300
        ),
    }
