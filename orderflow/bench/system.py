"""``orderflow bench``: orderflow end to end against the limits of its own parts, in one run.

- raw limits: aio-pika publish with confirms and consume with acks on a quorum queue; asyncpg
  single-row commits with 4 connections;
- relay: commit → confirmed publish at low load, NOTIFY wake-up vs a 50 ms polling relay; idle load;
- saga throughput: offered load stepped up until completed sagas/s stops rising; the best step is
  held 20 s and its completed rate is the maximum sustained;
- saga latency: place → terminal p50/p95/p99 at 25 % and 50 % of that maximum;
- efficiency: saga messages/s at the maximum (8 deliveries per saga) ÷ the raw
  publish-and-consume rate;
- memory: resident size of each service at start, after the run, and after a second run.
Every order is an "ok" order (charge, reserve, approve: the full path). The load generator runs
on the same two cores as everything else, which the figures include.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

from libs.pg.pool import create_pool
from libs.settings import Settings
from orderflow.bench import relay as relay_bench
from orderflow.bench.stats import percentile
from orderflow.client import OrderClient
from orderflow.supervisor import Supervisor

MESSAGES_PER_SAGA = 8  # deliveries: PlaceOrder, OrderCreated, ProcessPayment, PaymentCaptured,
# ReserveInventory, InventoryReserved, ApproveOrder, OrderConfirmed


async def raw_consume_rate(env: relay_bench.Env, *, count: int) -> float:
    """Consume-with-ack rate from a quorum queue holding ``count`` messages (prefetch 256)."""
    messages = relay_bench.outgoing(count)
    for start in range(0, count, 256):
        await env.publisher.publish_many(messages[start : start + 256])
    channel = await env.connection.channel()
    await channel.set_qos(prefetch_count=256)
    queue = await channel.get_queue("bench.sink")
    done = asyncio.Event()
    got = 0
    started = time.perf_counter()

    async def on_message(message: Any) -> None:
        nonlocal got
        await message.ack()
        got += 1
        if got >= count:
            done.set()

    tag = await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    await queue.cancel(tag)
    await channel.close()
    return count / elapsed


async def commit_rate(dsn: str, *, connections: int, seconds: float) -> float:
    pool = await create_pool(dsn, min_size=connections, max_size=connections)
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, v text)"
        )
    done = 0
    stop_at = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.perf_counter() < stop_at:
                await conn.execute("INSERT INTO bench_rows (v) VALUES ($1)", "x" * 100)
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return done / elapsed


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory(supervisor: Supervisor) -> dict[str, float]:
    return {
        c.name: round(rss_mib(c.process.pid), 1)
        for c in supervisor.children
        if c.process is not None and c.alive
    }


async def offer(client: OrderClient, *, rate: float, seconds: float) -> dict[str, Any]:
    """Place ``rate`` orders/s for ``seconds``; completed/s over the window and latencies."""
    tick = 0.02
    per_tick = rate * tick
    carry = 0.0
    ids: list[str] = []
    started = time.monotonic()
    next_at = started
    items = [("SPROCKET", 1, Decimal("2.25"))]
    while time.monotonic() - started < seconds:
        carry += per_tick
        n, carry = int(carry), carry - int(carry)
        if n:
            outcomes = await asyncio.gather(
                *(client.place(customer_id="carol", items=items) for _ in range(n))
            )
            ids += [o.order_id for o in outcomes]
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    window_end = time.monotonic()
    ended = [client.outcomes[o].ended_at for o in ids]
    completed_in_window = len([t for t in ended if t is not None and t <= window_end])
    # let the tail finish before the next step, so steps do not overlap
    await client.wait(ids, timeout=60)
    latencies = [
        client.outcomes[o].latency_ms for o in ids if client.outcomes[o].latency_ms is not None
    ]
    return {
        "offered_per_s": rate,
        "placed": len(ids),
        "completed_per_s": completed_in_window / seconds,
        "unfinished": sum(1 for o in ids if client.outcomes[o].status == "PENDING"),
        "p50_ms": percentile(latencies, 50),  # type: ignore[arg-type]
        "p95_ms": percentile(latencies, 95),  # type: ignore[arg-type]
        "p99_ms": percentile(latencies, 99),  # type: ignore[arg-type]
    }


async def settle(
    client: OrderClient, seconds: float = 5.0, *, admin_dsn: str | None = None
) -> None:
    """Let the system go quiet between steps. Before a latency measurement, also force the
    checkpoint the heavy steps made due, so that it does not land in the middle of it."""
    if admin_dsn is not None:
        from libs.pg.pool import connection

        async with connection(admin_dsn) as conn:
            await conn.execute("CHECKPOINT")
    await asyncio.sleep(seconds)


def sustainable(step: dict[str, Any]) -> bool:
    return bool(step["completed_per_s"] >= 0.95 * step["offered_per_s"])


async def saga_run(
    settings_env: dict[str, str],
    *,
    step_seconds: float,
    top_seconds: float,
    rates: list[float],
    log: Any,
) -> dict[str, Any]:
    import os

    from orderflow.setup import setup

    # long deadlines: a step beyond capacity must not turn into timeouts and compensations
    settings_env = {**settings_env, "ORDERFLOW_SAGA__STEP_DEADLINE": "120"}
    os.environ.update(settings_env)
    settings = Settings()
    await setup(settings)
    supervisor = Supervisor(
        env={**os.environ, **settings_env}, restart=False, output=log, color=False
    )
    results: dict[str, Any] = {"steps": []}
    await supervisor.start_all(timeout=90)
    try:
        client = await OrderClient.open(settings.amqp_url)
        try:
            await offer(client, rate=20, seconds=3)  # warm-up: connections, statement caches
            results["memory_start_mib"] = memory(supervisor)
            best, first_over = rates[0], None
            for rate in rates:
                step = await offer(client, rate=rate, seconds=step_seconds)
                results["steps"].append(step)
                await settle(client)
                if not sustainable(step):
                    first_over = rate
                    break
                best = rate
            if first_over is not None:  # two bisections between the last good and the first bad
                low, high = best, first_over
                for _ in range(2):
                    middle = round((low + high) / 2)
                    step = await offer(client, rate=middle, seconds=step_seconds)
                    results["steps"].append(step)
                    await settle(client)
                    low, high = (middle, high) if sustainable(step) else (low, middle)
                best = low
            top = await offer(client, rate=best, seconds=top_seconds)
            results["top"] = top
            results["max_sustained_per_s"] = top["completed_per_s"]
            peak = results["max_sustained_per_s"]
            await settle(client, 15, admin_dsn=settings.pg_admin_dsn)
            results["latency_at_25pct"] = await offer(
                client, rate=max(1.0, 0.25 * peak), seconds=step_seconds
            )
            await settle(client, 15, admin_dsn=settings.pg_admin_dsn)
            results["latency_at_50pct"] = await offer(
                client, rate=max(1.0, 0.5 * peak), seconds=step_seconds
            )
            results["memory_after_run_mib"] = memory(supervisor)
            await settle(client)
            await offer(client, rate=best, seconds=top_seconds)  # the second run
            results["memory_after_second_run_mib"] = memory(supervisor)
        finally:
            await client.close()
    finally:
        await supervisor.stop_all()
    return results


async def run(*, settings: Settings, quick: bool, log: Any) -> dict[str, Any]:
    from libs.messaging.admin import with_vhost
    from orderflow.chaos.harness import isolated

    amqp_base = with_vhost(settings.amqp_url, "/")
    results: dict[str, Any] = {}
    async with relay_bench.bench_env(amqp_base, settings.pg_admin_dsn) as env:
        count = 5_000 if quick else 20_000
        await relay_bench.raw_publish_rate(env, count=1000)
        results["raw_publish_confirms_msg_s"] = await relay_bench.raw_publish_rate(env, count=count)
        results["raw_consume_ack_msg_s"] = await raw_consume_rate(env, count=count)
        results["raw_pg_commits_4_conns_tx_s"] = await commit_rate(
            env.dsn, connections=4, seconds=3 if quick else 8
        )
        results["relay_latency"] = {
            mode: await relay_bench.relay_latency(
                env, mode=mode, count=200 if quick else 1000, rate=100
            )
            for mode in ("notify", "poll-50ms")
        }
        results["relay_idle_tx_per_s"] = await relay_bench.idle_load(
            env, listen=True, sweep=5.0, seconds=10 if quick else 30
        )
    pub, con = results["raw_publish_confirms_msg_s"], results["raw_consume_ack_msg_s"]
    results["raw_publish_and_consume_msg_s"] = 1 / (1 / pub + 1 / con)
    async with AsyncExitStack() as stack:
        env_vars = await stack.enter_async_context(isolated(settings))
        rates = [25.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0]
        saga = await saga_run(
            env_vars,
            step_seconds=5 if quick else 10,
            top_seconds=8 if quick else 20,
            rates=rates[:5] if quick else rates,
            log=log,
        )
    results["saga"] = saga
    results["efficiency"] = (
        saga["max_sustained_per_s"] * MESSAGES_PER_SAGA / results["raw_publish_and_consume_msg_s"]
    )
    return results
