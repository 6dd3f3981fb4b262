"""``orderflow bench``: orderflow end to end against the limits of its own parts, in one run.

- raw limits, measured (:mod:`orderflow.bench.raw`), and refused when implausible;
- relay: commit → confirmed publish at low load, NOTIFY wake-up vs a 50 ms polling relay;
- saga throughput: offered load stepped up until CONFIRMED sagas/s falls below 95 % of the
  offered rate, two bisections, then the best rate held 20 s — and held again 10 % lower when
  the hold itself misses the 95 % rule; that hold's CONFIRMED/s is the maximum sustained
  (each step starts on vacuumed databases: this machine runs PostgreSQL without autovacuum;
  the vacuums' own time, outside the steps, is reported beside it);
- per service during the hold: CPU ms per delivery (``/proc``), round trips to PostgreSQL and
  to RabbitMQ per delivery (the services' own counters, ``/metrics``);
- latency place → terminal p50/p95/p99 at 10 %, 25 % and 50 % of the maximum, beside the floor
  under it: a saga's broker trips and transactions, each measured alone (``raw``);
- efficiency: saga messages/s at the maximum (8 deliveries per saga) ÷ the measured raw
  publish-and-consume rate;
- metrics cost: capacity with metrics on and off, alternated, same rate, three runs each, each on
  vacuumed databases and with every service's ``/metrics`` read every 5 s; and the services' CPU
  per CONFIRMED order in those runs;
- memory: resident size of each service at start, after the run, and after a second run.
Every order takes the full path (charge, reserve, approve) and must end CONFIRMED: each step
reports how many did, and the run says so. The load generator runs on the same two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

from libs.pg.admin import database_of, on_database
from libs.secrets import url_list
from libs.settings import Settings
from orderflow.bench import raw
from orderflow.bench import relay as relay_bench
from orderflow.bench.stats import percentile
from orderflow.client import OrderClient
from orderflow.supervisor import Child, Supervisor, http_get
from orderflow.system import SERVICES

MESSAGES_PER_SAGA = 8  # deliveries: PlaceOrder, OrderCreated, ProcessPayment, PaymentCaptured,
# ReserveInventory, InventoryReserved, ApproveOrder, OrderConfirmed
_TICK = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def memory(supervisor: Supervisor) -> dict[str, float]:
    return {
        c.name: round(rss_mib(c.process.pid), 1)
        for c in supervisor.children
        if c.process is not None and c.alive
    }


def _total(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))


async def counters(supervisor: Supervisor) -> dict[str, dict[str, float]]:
    """Per child: CPU seconds so far, deliveries settled, statements to PostgreSQL, operations
    sent to RabbitMQ (its own counters)."""
    out = {}
    for child in supervisor.children:
        if child.process is None or child.http_port is None:
            continue
        _, text = await http_get(f"http://127.0.0.1:{child.http_port}/metrics")
        out[child.name] = {
            "cpu_s": cpu_seconds(child.process.pid),
            "deliveries": _total(text, "messaging_client_consumed_messages_total"),
            "pg": _total(text, "orderflow_db_client_operations_total"),
            "amqp": _total(text, "orderflow_messaging_client_operations_total"),
        }
    return out


def per_delivery(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    figures = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None:
            continue
        handled = end["deliveries"] - start["deliveries"]
        if handled <= 0:
            continue
        figures[name] = {
            "deliveries": handled,
            "cpu_ms_per_delivery": round(1000 * (end["cpu_s"] - start["cpu_s"]) / handled, 3),
            "pg_round_trips_per_delivery": round((end["pg"] - start["pg"]) / handled, 2),
            "amqp_operations_per_delivery": round((end["amqp"] - start["amqp"]) / handled, 2),
        }
    return figures


async def offer(client: OrderClient, *, rate: float, seconds: float) -> dict[str, Any]:
    """Place ``rate`` orders/s for ``seconds``; CONFIRMED/s over the window and latencies."""
    tick = 0.02
    carry = 0.0
    ids: list[str] = []
    started = time.monotonic()
    next_at = started
    items = [("SPROCKET", 1, Decimal("2.25"))]
    while time.monotonic() - started < seconds:
        carry += rate * tick
        n, carry = int(carry), carry - int(carry)
        if n:
            outcomes = await asyncio.gather(
                *(client.place(customer_id="carol", items=items) for _ in range(n))
            )
            ids += [o.order_id for o in outcomes]
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    window_end = time.monotonic()
    await client.wait(ids, timeout=60)  # the tail finishes before the next step
    outcomes = [client.outcomes[o] for o in ids]
    statuses = [o.status for o in outcomes]
    latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    ended = [o.ended_at for o in outcomes if o.ended_at is not None and o.status == "CONFIRMED"]
    return {
        "offered_per_s": rate,
        "placed": len(ids),
        "completed_per_s": steady_rate(ended, started, window_end, latencies),
        "completed_in_window_per_s": sum(1 for t in ended if t <= window_end) / seconds,
        "confirmed": statuses.count("CONFIRMED"),
        "rejected": statuses.count("REJECTED"),
        "unfinished": statuses.count("PENDING"),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
    }


def steady_rate(
    ended: Sequence[float], started: float, window_end: float, latencies_ms: Sequence[float]
) -> float:
    """Orders completed per second while the system was loaded: completions counted over a
    window as long as the step's, shifted by its median place → terminal latency.

    Counting only what completed inside the step itself loses the last ``latency * rate``
    orders, which are still in flight at its end: at 75 orders/s with a 0.5 s median that is
    5 % of a 10 s step, so a system keeping up looked as if it did not. Shifted by the
    pipeline's delay, the window sees the steady state: the offered rate when the system keeps
    up; its own maximum rate when it does not (then latency grows, and so does the shift, but
    completions per second stay at what it can do)."""
    if not ended:
        return 0.0
    lag = percentile(latencies_ms, 50) / 1000 if latencies_ms else 0.0
    low, high = started + lag, window_end + lag
    return sum(1 for t in ended if low <= t <= high) / (window_end - started)


def sustainable(step: dict[str, Any]) -> bool:
    return bool(step["completed_per_s"] >= 0.95 * step["offered_per_s"])


async def settle(
    seconds: float = 5.0, *, admin_dsn: str | None = None, databases: Sequence[str] = ()
) -> float:
    """Let the system go quiet between steps. With ``admin_dsn``, also vacuum the services'
    ``databases`` (what autovacuum does on a default PostgreSQL, and what a machine running
    with it off never does: the dead rows the earlier steps left in the outboxes and inboxes
    would slow every later statement) and force the checkpoint they made due, so that neither
    lands in the middle of the next step. Done after every step of the search for the maximum
    and before each latency step."""
    started = time.monotonic()
    if admin_dsn is not None:
        from libs.pg.pool import connection

        for database in databases:
            async with connection(on_database(admin_dsn, database)) as conn:
                await conn.execute("VACUUM (ANALYZE)")
        async with connection(admin_dsn) as conn:
            await conn.execute("CHECKPOINT")
    took = time.monotonic() - started
    await asyncio.sleep(seconds)
    return took


async def scraping(supervisor: Supervisor, *, every: float) -> None:
    """Read every service's ``/metrics`` every ``every`` seconds, as Prometheus does, until
    cancelled (the capacity runs with metrics on pay for their collection too)."""
    while True:
        await asyncio.sleep(every)
        for child in supervisor.children:
            if child.http_port is not None:
                with contextlib.suppress(Exception):
                    await http_get(f"http://127.0.0.1:{child.http_port}/metrics")


class Services:
    """The four services, started (and restarted with other settings) for the saga runs."""

    def __init__(self, env: dict[str, str], log: Any) -> None:
        self.env, self.log = env, log
        self.supervisor: Supervisor | None = None
        self.client: OrderClient | None = None

    async def start(self, **extra: str) -> OrderClient:
        await self.stop()
        self.supervisor = Supervisor(
            env={**os.environ, **self.env, **extra}, restart=False, output=self.log, color=False
        )
        await self.supervisor.start_all(timeout=90)
        self.client = await OrderClient.open(self.env["ORDERFLOW_AMQP_URL"])
        await offer(self.client, rate=20, seconds=3)  # warm-up: connections, statement caches
        return self.client

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.supervisor is not None:
            await self.supervisor.stop_all()
            self.supervisor = None

    @property
    def children(self) -> list[Child]:
        return self.supervisor.children if self.supervisor else []


METRICS_PAIRS = 3
"""Capacity runs with metrics off and on, alternated, this many of each."""
SCRAPE_EVERY_S = 5.0
"""How often the capacity runs read ``/metrics`` (Prometheus's default is every 15 s)."""


async def find_max(
    client: OrderClient,
    rates: list[float],
    *,
    step_seconds: float,
    top_seconds: float,
    quiet: Callable[[], Awaitable[object]] = settle,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The highest rate that passes the 95 % rule, held; ``quiet`` runs after every step."""
    steps = []
    best, first_over = rates[0], None
    for rate in rates:
        step = await offer(client, rate=rate, seconds=step_seconds)
        steps.append(step)
        await quiet()
        if not sustainable(step):
            first_over = rate
            break
        best = rate
    if first_over is not None:  # two bisections between the last good and the first bad
        low, high = best, first_over
        for _ in range(2):
            middle = round((low + high) / 2)
            step = await offer(client, rate=middle, seconds=step_seconds)
            steps.append(step)
            await quiet()
            low, high = (middle, high) if sustainable(step) else (low, middle)
        best = low
    for _ in range(3):  # the hold must pass the rule too
        top = await offer(client, rate=best, seconds=top_seconds)
        top["held_at"] = best
        steps.append(top)
        await quiet()
        if sustainable(top):
            return top, steps
        best = round(best * 0.9)
    return top, steps


async def saga_run(
    env: dict[str, str], *, step_seconds: float, top_seconds: float, rates: list[float], log: Any
) -> dict[str, Any]:
    from orderflow.setup import setup

    # long deadlines: a step beyond capacity must not turn into timeouts and compensations
    env = {**env, "ORDERFLOW_SAGA__STEP_DEADLINE": "120"}
    await setup(Settings.of({**os.environ, **env}))
    services = Services(env, log)
    results: dict[str, Any] = {}
    try:
        client = await services.start()
        assert services.supervisor is not None
        results["memory_start_mib"] = memory(services.supervisor)
        settings = Settings.of({**os.environ, **env})
        databases = [database_of(settings.dsn_for(service)) for service in SERVICES]

        vacuums: list[float] = []

        async def quiet() -> None:
            # every step starts on vacuumed tables (this machine's PostgreSQL never vacuums by
            # itself); the vacuum's own time, outside the steps, is recorded
            vacuums.append(await settle(admin_dsn=settings.pg_admin_dsn, databases=databases))

        before = await counters(services.supervisor)
        started = time.monotonic()
        top, results["steps"] = await find_max(
            client, rates, step_seconds=step_seconds, top_seconds=top_seconds, quiet=quiet
        )
        results["top"] = top
        results["max_sustained_per_s"] = top["completed_per_s"]
        results["per_service"] = per_delivery(before, await counters(services.supervisor))
        results["per_service_window_s"] = round(time.monotonic() - started, 1)
        results["vacuum_between_steps_s"] = [round(v, 3) for v in vacuums]
        peak = results["max_sustained_per_s"]
        for share in (10, 25, 50):
            await settle(15, admin_dsn=settings.pg_admin_dsn, databases=databases)
            results[f"latency_at_{share}pct"] = await offer(
                client, rate=max(1.0, share / 100 * peak), seconds=step_seconds
            )
        results["memory_after_run_mib"] = memory(services.supervisor)
        await settle()
        await offer(client, rate=top["offered_per_s"], seconds=top_seconds)  # the second run
        results["memory_after_second_run_mib"] = memory(services.supervisor)
        # what metrics cost: capacity at 1.25 times the maximum, metrics on and off, alternated,
        # and the services' CPU per CONFIRMED order meanwhile (capacity past the maximum moves
        # by several per cent from run to run; the services' CPU per order much less)
        capacity: dict[str, list[float]] = {"on": [], "off": []}
        service_cpu: dict[str, list[float]] = {"on": [], "off": []}
        for mode in ("off", "on") * METRICS_PAIRS:
            await quiet()  # each run on vacuumed tables, not on the dead rows of the one before
            client = await services.start(ORDERFLOW_METRICS="true" if mode == "on" else "false")
            assert services.supervisor is not None
            pids = [c.process.pid for c in services.children if c.process is not None]
            scraper = asyncio.create_task(scraping(services.supervisor, every=SCRAPE_EVERY_S))
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            try:
                step = await offer(client, rate=1.25 * peak, seconds=step_seconds)
            finally:
                scraper.cancel()
            used = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            capacity[mode].append(step["completed_per_s"])
            service_cpu[mode].append(round(1000 * used / max(step["confirmed"], 1), 3))
        results["metrics_capacity_per_s"] = capacity
        results["metrics_service_cpu_ms_per_order"] = service_cpu
    finally:
        await services.stop()
    everything = [
        *results.get("steps", []),
        *(results.get(f"latency_at_{s}pct") for s in (10, 25, 50)),
    ]
    placed = sum(s["placed"] for s in everything if s)
    confirmed = sum(s["confirmed"] for s in everything if s)
    results["all_confirmed"] = placed == confirmed
    results["orders_placed"], results["orders_confirmed"] = placed, confirmed
    return results


async def cluster_line(
    cluster: Settings, *, step_seconds: float, top_seconds: float, rates: list[float], log: Any
) -> dict[str, Any]:
    """The same saga run on a broker cluster: max sustained and latency at half of it."""
    from orderflow.chaos.harness import isolated
    from orderflow.setup import setup

    async with isolated(cluster) as env_vars:
        env = {**env_vars, "ORDERFLOW_SAGA__STEP_DEADLINE": "120"}
        await setup(Settings.of({**os.environ, **env}))
        services = Services(env, log)
        try:
            client = await services.start()
            top, steps = await find_max(
                client, rates, step_seconds=step_seconds, top_seconds=top_seconds
            )
            peak = top["completed_per_s"]
            await settle(10)
            half = await offer(client, rate=max(1.0, peak / 2), seconds=step_seconds)
        finally:
            await services.stop()
    placed = sum(s["placed"] for s in (*steps, half))
    confirmed = sum(s["confirmed"] for s in (*steps, half))
    return {
        "nodes": len(url_list(cluster.amqp_url)),
        "max_sustained_per_s": peak,
        "top": top,
        "steps": steps,
        "latency_at_50pct": half,
        "all_confirmed": placed == confirmed,
    }


async def run(
    *, settings: Settings, quick: bool, log: Any, cluster: Settings | None = None
) -> dict[str, Any]:
    from libs.messaging.admin import with_vhost
    from orderflow.chaos.harness import isolated

    amqp_base = with_vhost(settings.amqp_url, "/")
    results: dict[str, Any] = {}
    async with relay_bench.bench_env(amqp_base, settings.pg_admin_dsn) as env:
        results.update(await raw.measure(env, quick=quick))
        results["implausible"] = raw.implausible(results)
        if results["implausible"]:
            return results
        results["latency_floor_ms"] = raw.latency_floor_ms(results)
        results["relay_latency"] = {
            mode: await relay_bench.relay_latency(
                env, mode=mode, count=200 if quick else 1000, rate=100
            )
            for mode in ("notify", "poll-50ms")
        }
        results["relay_idle_tx_per_s"] = await relay_bench.idle_load(
            env, listen=True, sweep=5.0, seconds=10 if quick else 30
        )
    async with AsyncExitStack() as stack:
        env_vars = await stack.enter_async_context(isolated(settings))
        rates = [25.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 600.0]
        saga = await saga_run(
            env_vars,
            step_seconds=5 if quick else 10,
            top_seconds=8 if quick else 20,
            rates=rates[:5] if quick else rates,
            log=log,
        )
    results["saga"] = saga
    if cluster is not None:
        results["cluster"] = await cluster_line(
            cluster,
            step_seconds=5 if quick else 10,
            top_seconds=8 if quick else 20,
            rates=rates[:5] if quick else rates,
            log=log,
        )
    results["efficiency"] = (
        saga["max_sustained_per_s"] * MESSAGES_PER_SAGA / results["raw_publish_and_consume_msg_s"]
    )
    return results
