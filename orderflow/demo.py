"""`orderflow demo` (what `make demo` runs): set up, start, place a mix, show how each ended."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

from libs.settings import Settings
from orderflow.client import OrderClient
from orderflow.load import LoadResult, plan, run_load
from orderflow.setup import setup
from orderflow.supervisor import Supervisor

DEMO_MIX = {"ok": 12, "declined": 4, "out-of-stock": 4}


@dataclass(frozen=True)
class DemoRow:
    order_id: str
    kind: str
    status: str
    reason: str
    latency_ms: float | None


@dataclass
class DemoResult:
    load: LoadResult
    rows: list[DemoRow]
    log: str


async def run_demo(
    settings: Settings, *, orders: int = 20, seed: int = 7, verbose: bool = False
) -> DemoResult:
    await setup(settings)
    log = io.StringIO()
    supervisor = Supervisor(restart=False, output=sys.stdout if verbose else log, color=False)
    try:
        await supervisor.start_all(timeout=90)
        client = await OrderClient.open(settings.amqp_url)
        try:
            planned = plan(orders, DEMO_MIX, seed)
            result = await run_load(client, planned, rate=20, timeout=90)
            rows = []
            for order_id, p in zip(result.order_ids, planned, strict=True):
                o = client.outcomes[order_id]
                rows.append(DemoRow(order_id, p.kind, o.status, o.reason or "", o.latency_ms))
        finally:
            await client.close()
    finally:
        await supervisor.stop_all()
    return DemoResult(result, rows, log.getvalue())
