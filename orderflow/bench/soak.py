"""``orderflow bench soak``: steady orders for a long while, with retention on, and what grows.

The services run with short retention horizons (published outbox rows and inbox records kept
``horizon`` seconds, ended sagas too, a retention round every ``horizon / 4``), and orders are
placed at ``rate`` per second for ``seconds``. Every ``sample_every`` seconds the run records each
service database's row counts and size and each process's resident memory.

Once retention has caught up (one horizon plus a round after the start), the tables retention
prunes must stay flat: their row counts in the last quarter of the run no higher than in the
first quarter after catch-up (plus one retention round's worth of rows and a 10 % margin). The
saga database (no business rows) must stay flat in size once autovacuum has gone over the deleted
rows (judged only on runs that last two autovacuum rounds past catch-up, and only when the server
runs autovacuum at all: with ``autovacuum = off`` no deleted or updated row's space is reused),
and memory must not keep growing.
Business rows (orders, payments, ledger, reservations) are the system's record: they grow with
the orders, by design, and are reported, not judged.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

from libs.pg.admin import database_of, on_database
from libs.pg.pool import connection
from libs.settings import Settings
from orderflow.bench.system import memory
from orderflow.client import OrderClient
from orderflow.supervisor import Supervisor
from orderflow.system import SYSTEM

PRUNED = ("outbox", "inbox", "saga_instance", "saga_log")
VACUUM_SETTLE = 120.0  # two autovacuum rounds (autovacuum_naptime 60 s)


async def _sample(settings: Settings, supervisor: Supervisor) -> dict[str, Any]:
    rows: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    admin = settings.pg_admin_dsn
    for service in SYSTEM.names:
        database = database_of(settings.dsn_for(service))
        dsn = on_database(admin, database)
        tables = ("outbox", "inbox", *SYSTEM.service(service).tables)
        async with connection(dsn, application_name="orderflow-soak") as conn:
            rows[service] = {
                t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in tables
            }
            sizes[service] = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    return {"at": time.monotonic(), "rows": rows, "db_bytes": sizes, "rss_mib": memory(supervisor)}


def verdict(
    samples: list[dict[str, Any]],
    *,
    started: float,
    catch_up: float,
    rate: float,
    round_s: float,
    autovacuum: bool = True,
) -> list[str]:
    """What grew that should not have (empty: flat)."""
    settled = [s for s in samples if s["at"] - started >= catch_up]
    if len(settled) < 4:
        return [f"too short to judge: {len(settled)} samples after retention caught up"]
    quarter = max(1, len(settled) // 4)
    early, late = settled[:quarter], settled[-quarter:]
    problems = []
    slack = rate * round_s * 8  # a retention round's worth of rows (8 per saga, the most)
    for service, tables in late[0]["rows"].items():
        for table in tables:
            if table not in PRUNED:
                continue
            before = max(s["rows"][service][table] for s in early)
            after = max(s["rows"][service][table] for s in late)
            if after > before * 1.1 + slack:
                problems.append(f"{service}.{table} grew from {before} to {after} rows")
    # the space of deleted rows is reused once autovacuum went over them (it wakes every
    # minute): the size is judged only when the run lasts two of its rounds past catch-up
    vacuumed = [s for s in settled if s["at"] - started >= catch_up + VACUUM_SETTLE]
    if autovacuum and len(vacuumed) >= 4:
        part = max(1, len(vacuumed) // 4)
        size_before = max(s["db_bytes"]["saga"] for s in vacuumed[:part])
        size_after = max(s["db_bytes"]["saga"] for s in vacuumed[-part:])
        if size_after > size_before * 1.25 + 2 * 1024 * 1024:
            problems.append(f"the saga database grew from {size_before} to {size_after} bytes")
    for name in late[-1]["rss_mib"]:
        first = max(s["rss_mib"].get(name, 0.0) for s in early)
        last = max(s["rss_mib"].get(name, 0.0) for s in late)
        if last > first * 1.15 + 10:
            problems.append(f"{name} resident memory grew from {first} to {last} MiB")
    return problems


async def soak(
    settings: Settings,
    *,
    rate: float,
    seconds: float,
    horizon: float,
    sample_every: float,
    log: Any,
) -> dict[str, Any]:
    from orderflow.chaos.harness import isolated
    from orderflow.setup import setup

    round_s = max(1.0, horizon / 4)
    retention = {
        "ORDERFLOW_RETENTION__OUTBOX": str(horizon),
        "ORDERFLOW_RETENTION__INBOX": str(horizon),
        "ORDERFLOW_RETENTION__SAGAS": str(horizon),
        "ORDERFLOW_RETENTION__INTERVAL": str(round_s),
    }
    async with AsyncExitStack() as stack:
        env = {**await stack.enter_async_context(isolated(settings)), **retention}
        run_settings = Settings.of({**os.environ, **env})
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            await setup(run_settings)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        supervisor = Supervisor(env={**os.environ, **env}, restart=False, output=log, color=False)
        stack.push_async_callback(supervisor.stop_all)
        await supervisor.start_all(timeout=90)
        client = await OrderClient.open(env["ORDERFLOW_AMQP_URL"])
        stack.push_async_callback(client.close)
        async with connection(run_settings.pg_admin_dsn) as conn:
            autovacuum = await conn.fetchval("SHOW autovacuum") == "on"
        started = time.monotonic()
        samples = [await _sample(run_settings, supervisor)]
        ids: list[str] = []
        items = [("SPROCKET", 1, Decimal("2.25"))]

        async def place() -> None:
            next_at = time.monotonic()
            while time.monotonic() - started < seconds:
                outcome = await client.place(customer_id="carol", items=items)
                ids.append(outcome.order_id)
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        placing = asyncio.create_task(place())
        while not placing.done():
            await asyncio.sleep(sample_every)
            samples.append(await _sample(run_settings, supervisor))
        await placing
        finished = await client.wait(ids, timeout=120)
        statuses = [client.outcomes[o].status for o in ids]
    problems = verdict(
        samples,
        started=started,
        catch_up=horizon + 2 * round_s,
        rate=rate,
        round_s=round_s,
        autovacuum=autovacuum,
    )
    if not finished:
        problems.append(f"{statuses.count('PENDING')} orders did not end")
    if statuses.count("CONFIRMED") != len(ids):
        problems.append(f"{len(ids) - statuses.count('CONFIRMED')} orders not CONFIRMED")
    return {
        "rate": rate,
        "seconds": seconds,
        "horizon_s": horizon,
        "orders": len(ids),
        "confirmed": statuses.count("CONFIRMED"),
        "autovacuum": autovacuum,
        "notes": []
        if autovacuum
        else [
            "database size not judged: autovacuum is off on this PostgreSQL server, so the "
            "space of deleted and updated rows is never reused (retention keeps the rows flat)"
        ],
        "samples": [{**s, "at": round(s["at"] - started, 1)} for s in samples],
        "problems": problems,
    }
