"""Any AMQP client can place an order and follow it: the example uses aio-pika alone."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from .conftest import System

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).parents[2] / "examples" / "place_order_raw.py"


async def run_example(system: System, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        system.env["ORDERFLOW_AMQP_URL"],
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_a_plain_aio_pika_client_places_an_order_and_sees_it_confirmed(
    system: System,
) -> None:
    out = await run_example(system, "alice", "WIDGET:2:9.99")
    lines = out.splitlines()
    assert lines[0].startswith("placed ")
    order_id = lines[0].split()[1]
    assert lines[1].startswith("order.order_created.v1")
    assert '"total": "19.98"' in lines[1]
    assert lines[-1].startswith("order.order_confirmed.v1")
    assert (
        await system.scalar("order_svc", "SELECT status FROM orders WHERE id = $1", order_id)
        == "CONFIRMED"
    )


async def test_a_plain_client_sees_a_rejection_with_its_reason(system: System) -> None:
    out = await run_example(system, "nobody", "WIDGET:1:9.99")
    assert out.splitlines()[-1].startswith("order.order_rejected.v1")
    assert "unknown customer nobody" in out
    await system.quiet_check()
