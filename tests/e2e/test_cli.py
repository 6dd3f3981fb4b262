"""The `orderflow` command line against a real running stack: outputs asserted, not exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from decimal import Decimal

import aio_pika
import pytest

from contracts import REGISTRY
from contracts.order import PlaceOrder
from contracts.types import PricedLine
from libs.messages import codec
from libs.messages.envelope import Envelope

from .conftest import ROOT, System, cli, isolated_env, running_system

pytestmark = pytest.mark.e2e


async def test_place_order_wait_prints_the_outcome_timeline_and_trace(system: System) -> None:
    code, out = await cli(
        system.env, "place-order", "--customer", "alice", "--item", "WIDGET:2", "--wait"
    )
    assert code == 0, out
    order_id = re.search(r"order ([0-9a-f-]{36}) placed", out)[1]  # type: ignore[index]
    assert "CONFIRMED" in out
    for event in ("started", "command_sent", "reply", "completed"):
        assert event in out
    trace = re.search(r"trace ([0-9a-f]{32})", out)[1]  # type: ignore[index]
    assert f"/trace/{trace}" in out
    code, out = await cli(system.env, "orders", "--status", "CONFIRMED")
    assert order_id in out
    assert "19.98 USD" in out
    code, out = await cli(system.env, "saga", "list", "--state", "COMPLETED")
    assert order_id in out
    assert "1 instance(s)" in out
    code, out = await cli(system.env, "saga", "show", order_id)
    assert code == 0
    assert out.count("command_sent") == 3


async def test_saga_retry_and_compensate_steer_an_order_stuck_on_a_stopped_participant() -> None:
    async with running_system(extra_env={"ORDERFLOW_SAGA__STEP_DEADLINE": "60"}) as system:
        [inventory] = system.supervisor.of("inventory_svc")
        await system.supervisor.kill(inventory, signal.SIGTERM)
        order_id = await system.place("alice", ("WIDGET", 1, "9.99"))
        for _ in range(100):
            if (
                await system.scalar("saga", "SELECT step FROM saga_instance WHERE id=$1", order_id)
                == "inventory"
            ):
                break
            await asyncio.sleep(0.1)
        code, out = await cli(system.env, "saga", "list", "--state", "RUNNING")
        assert order_id in out
        code, out = await cli(system.env, "saga", "retry", order_id)
        assert code == 0, out
        assert "operator_retry inventory" in out
        code, out = await cli(
            system.env, "saga", "compensate", order_id, "--reason", "customer cancelled"
        )
        assert code == 0, out
        assert "COMPENSATING" in out
        await system.wait([order_id], timeout=30)
        assert system.status(order_id) == "REJECTED"
        assert system.client.outcomes[order_id].reason == "customer cancelled"
        code, out = await cli(system.env, "saga", "show", order_id)
        assert "operator_retry" in out
        assert "operator_compensate" in out
        assert "COMPENSATED" in out
        code, out = await cli(system.env, "saga", "compensate", order_id)
        assert code == 1  # refused: the saga is over
        assert "not RUNNING" in out
        await system.supervisor.start(inventory)
        await system.quiet_check(timeout=30)


async def _publish(system: System, body: bytes, *, message_id: str, content_type: str) -> None:
    connection = await aio_pika.connect_robust(system.env["ORDERFLOW_AMQP_URL"])
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("order.commands")
    await exchange.publish(
        aio_pika.Message(
            body, message_id=message_id, content_type=content_type, type="order.place_order.v1"
        ),
        routing_key="order.place_order.v1",
    )
    await connection.close()


async def test_a_dead_letter_made_on_purpose_is_listed_shown_replayed_once_and_purged(
    system: System,
) -> None:
    await _publish(
        system, b"{not json", message_id="junk-1", content_type="application/cloudevents+json"
    )
    # a good command that fails while its table is missing, sent twice by an impatient client
    await system.scalar("order_svc", "ALTER TABLE orders RENAME TO orders_away", admin=True)
    order_id = str(uuid.uuid4())
    command = PlaceOrder(
        order_id=order_id,
        customer_id="alice",
        items=(PricedLine(sku="WIDGET", quantity=1, unit_price=Decimal("9.99")),),
    )
    envelope: Envelope = REGISTRY.envelope(command, source="/test", subject=order_id)
    for _ in range(2):
        await _publish(
            system,
            codec.encode(envelope),
            message_id=envelope.id,
            content_type="application/cloudevents+json",
        )
    for _ in range(100):
        code, out = await cli(system.env, "dlq", "list")
        if "3 dead letter(s)" in out:
            break
        await asyncio.sleep(0.3)
    assert "MalformedMessage" in out
    assert out.count("UndefinedTableError") == 2
    code, out = await cli(system.env, "dlq", "show", "junk-1")
    assert code == 0
    assert "{not json" in out
    assert "x-orderflow-error-class: MalformedMessage" in out
    await system.scalar("order_svc", "ALTER TABLE orders_away RENAME TO orders", admin=True)
    code, out = await cli(
        system.env, "dlq", "replay", "--group", "UndefinedTableError|order.place_order.v1"
    )
    assert "replayed 2 dead letter(s)" in out  # the group: both copies, not the junk
    for _ in range(300):
        if (
            await system.scalar("order_svc", "SELECT status FROM orders WHERE id = $1", order_id)
            == "CONFIRMED"
        ):
            break
        await asyncio.sleep(0.1)
    assert (
        await system.scalar("order_svc", "SELECT status FROM orders WHERE id = $1", order_id)
        == "CONFIRMED"
    )
    assert await system.scalar("order_svc", "SELECT count(*) FROM orders") == 1
    assert (
        await system.scalar(
            "order_svc", "SELECT count(*) FROM inbox WHERE message_id = $1", envelope.id
        )
        == 1
    )
    code, out = await cli(system.env, "dlq", "replay", envelope.id)
    assert code == 1
    assert "already replayed" in out
    code, out = await cli(system.env, "dlq", "edit", "junk-0", "--body-file", "/dev/null")
    assert code == 1
    assert "no dead letter junk-0" in out
    code, out = await cli(system.env, "dlq", "purge", "--yes")
    assert "purged 1 dead letter(s)" in out
    code, out = await cli(system.env, "dlq", "list")
    assert "0 dead letter(s)" in out
    await system.quiet_check()


async def test_status_shows_every_service_with_its_queue_and_consumer(system: System) -> None:
    code, out = await cli(system.env, "status")
    assert code == 0, out
    for queue in (
        "order_svc.commands",
        "payment_svc.commands",
        "inventory_svc.commands",
        "saga.events",
    ):
        line = next(row for row in out.splitlines() if queue in row)
        assert re.search(r"\b1\b", line), line  # one consumer each
    assert "sagas: none" in out


async def test_load_with_a_fixed_seed_places_the_same_mix_twice(system: System) -> None:
    runs = []
    for _ in range(2):
        code, out = await cli(system.env, "load", "--orders", "30", "--rate", "60", "--seed", "42")
        assert code == 0, out
        runs.append(
            [row for row in out.splitlines() if re.match(r"\W*(ok|declined|out-of-stock)\W", row)]
        )
    assert runs[0] == runs[1]
    assert len(runs[0]) >= 2
    await system.quiet_check()


async def test_errors_are_sentences_with_the_fix_and_never_tracebacks() -> None:
    env = {"ORDERFLOW_AMQP_URL": "amqp://guest:secret@127.0.0.1:5999/orderflow"}
    code, out = await cli(env, "place-order", "--customer", "alice", "--item", "WIDGET:1")
    assert code == 1
    assert "amqp://guest:***@127.0.0.1:5999/orderflow" in out
    assert "rabbitmq-server -detached" in out
    assert "secret" not in out
    code, out = await cli({}, "place-order", "--customer", "alice", "--item", "WIDGET")
    assert code == 2
    assert "SKU:QTY" in out
    async with running_system(services=()) as system:  # a catalog to ask, no services
        code, out = await cli(
            system.env, "place-order", "--customer", "alice", "--item", "MYSTERY:1"
        )
    assert "unknown SKU MYSTERY" in out
    code, out = await cli(
        {"ORDERFLOW_ORDER_DSN": "postgresql://postgres@127.0.0.1:5999/x"}, "orders"
    )
    assert code == 1
    assert "cannot reach PostgreSQL" in out
    code, out = await cli({}, "load", "--mix", "ok=1,free=3")
    assert "unknown order kind 'free'" in out
    for output in (out,):
        assert "Traceback" not in output


async def test_make_demo_sets_up_runs_a_mix_and_shows_every_outcome() -> None:
    async with isolated_env() as env:
        proc = await asyncio.create_subprocess_exec(
            "make",
            "demo",
            cwd=ROOT,
            env={**os.environ, **env, "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out_bytes, _ = await asyncio.wait_for(proc.communicate(), 300)
        out = out_bytes.decode()
        assert proc.returncode == 0, out[-3000:]
        assert "how each order ended" in out
        for kind in ("ok", "declined", "out-of-stock"):
            assert f"{kind}: saga timeline of order" in out
        assert "ok → CONFIRMED: 12" in out
        assert "declined → REJECTED: 4" in out
        assert "out-of-stock → REJECTED: 4" in out
        assert "insufficient funds" in out
        assert "not enough stock for GIZMO" in out
        assert re.search(r"trace [0-9a-f]{32}", out)
        json.dumps(out)  # printable


async def test_place_order_wait_and_load_say_at_once_that_no_service_runs() -> None:
    async with running_system(services=()) as system:  # set up, nothing consuming
        started = time.monotonic()
        code, out = await cli(
            system.env, "place-order", "--customer", "alice", "--item", "WIDGET:1", "--wait"
        )
        assert code == 1, out
        assert "no service consumes order_svc.commands" in out
        assert "uv run orderflow up" in out
        code, load_out = await cli(system.env, "load", "--orders", "3")
        assert code == 1, load_out
        assert "no service consumes" in load_out
        assert time.monotonic() - started < 30  # not the 60 s of waiting for nothing
        # without --wait the order is still placed, with a warning
        code, out = await cli(
            system.env, "place-order", "--customer", "alice", "--item", "WIDGET:1"
        )
        assert code == 0, out
        assert "the order waits in the queue" in out
    async with running_system() as system:  # and with the services up, no such sentence
        code, out = await cli(
            system.env, "place-order", "--customer", "alice", "--item", "WIDGET:1", "--wait"
        )
        assert code == 0, out
        assert "no service consumes" not in out
