"""The machine's raw limits, measured (never derived), and whether they are plausible.

- publish with confirms to a quorum queue, 256 in flight;
- consume with acks from a quorum queue holding the messages (prefetch 256);
- publish and consume at once: a publisher with confirms and a consumer with acks on the same
  queue, the rate at which messages make the whole trip;
- asyncpg single-row commits with 4 connections.

A figure far below what this kind of machine gives means the machine is not fit to measure on
(another job running, a broker in flow control): :func:`implausible` says which, and
``orderflow bench`` exits non-zero instead of reporting slow code.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from libs.pg.pool import create_pool
from orderflow.bench import relay as relay_bench
from orderflow.bench.stats import writers_rate

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
    }
