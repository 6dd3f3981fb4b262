"""One trace per order across every service, proven on the wire with a local OTLP receiver."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
import pytest_asyncio

from libs.testing.otlp import OtlpReceiver, ReceivedSpan

from .conftest import System, cli, running_system

SERVICES = {"orderflow-cli", "order_svc", "payment_svc", "inventory_svc", "saga"}
HAPPY = {
    "order.place_order.v1",
    "order.order_created.v1",
    "payment.process_payment.v1",
    "payment.payment_captured.v1",
    "inventory.reserve_inventory.v1",
    "inventory.inventory_reserved.v1",
    "order.approve_order.v1",
    "order.order_confirmed.v1",
}


@pytest.fixture(scope="module")
def receiver() -> OtlpReceiver:
    with OtlpReceiver() as r:
        yield r  # type: ignore[misc]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traced(receiver: OtlpReceiver) -> AsyncIterator[System]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "ORDERFLOW_LOG_LEVEL": "DEBUG",
    }
    async with running_system(extra_env=env) as system:
        yield system


pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def place(system: System, *args: str) -> tuple[str, str]:
    code, out = await cli(system.env, "place-order", *args, "--wait")
    assert code == 0, out
    order_id = re.search(r"order ([0-9a-f-]{36}) placed", out)[1]  # type: ignore[index]
    trace_id = re.search(r"trace\s+([0-9a-f]{32})", out)[1]  # type: ignore[index]
    return order_id, trace_id


async def spans_until(
    receiver: OtlpReceiver, trace_id: str, keys: set[str], timeout: float = 15
) -> list[ReceivedSpan]:
    """The trace's spans, once every routing key in ``keys`` has its consumer span."""
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.spans_of_trace(trace_id)
        consumed = {
            s.attributes.get("messaging.rabbitmq.destination.routing_key")
            for s in spans
            if s.kind == "CONSUMER"
        }
        if keys <= consumed or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.2)


async def test_a_confirmed_order_is_one_trace_through_all_four_services_and_the_cli(
    traced: System, receiver: OtlpReceiver
) -> None:
    order_id, trace_id = await place(traced, "--customer", "alice", "--item", "WIDGET:1")
    spans = await spans_until(receiver, trace_id, HAPPY)
    assert {s.service for s in spans} == SERVICES
    ids_for_order = {
        s.trace_id
        for s in receiver.snapshot()
        if s.attributes.get("orderflow.order_id") == order_id
    }
    assert ids_for_order == {trace_id}
    by_id = {s.span_id: s for s in spans}
    consumers = [s for s in spans if s.kind == "CONSUMER"]
    assert {s.attributes["messaging.rabbitmq.destination.routing_key"] for s in consumers} == HAPPY
    for consumer in consumers:
        producer = by_id[consumer.parent_span_id]  # type: ignore[index]
        assert producer.kind == "PRODUCER"
        assert (
            producer.attributes["messaging.rabbitmq.destination.routing_key"]
            == consumer.attributes["messaging.rabbitmq.destination.routing_key"]
        )
        assert (
            producer.attributes["messaging.message.id"]
            == consumer.attributes["messaging.message.id"]
        )
        assert consumer.attributes["messaging.system"] == "rabbitmq"
    relays = [s for s in spans if s.kind == "PRODUCER" and s.service != "orderflow-cli"]
    assert len(relays) == 7
    assert all(s.attributes["orderflow.outbox.wait_ms"] >= 0 for s in relays)
    transactions = [s for s in spans if s.name == "postgresql transaction"]
    assert len(transactions) == 8
    assert all(by_id[t.parent_span_id].kind == "CONSUMER" for t in transactions)  # type: ignore[index]
    saga_states = {s.attributes.get("orderflow.saga.state") for s in spans if s.service == "saga"}
    assert "COMPLETED" in saga_states
    roots = [s for s in spans if s.parent_span_id is None]
    assert [(r.service, r.kind) for r in roots] == [("orderflow-cli", "PRODUCER")]


async def test_a_rejected_orders_trace_holds_the_refund_and_the_rejection(
    traced: System, receiver: OtlpReceiver
) -> None:
    keys = {
        "payment.refund_payment.v1",
        "payment.payment_refunded.v1",
        "order.reject_order.v1",
        "order.order_rejected.v1",
        "inventory.inventory_reservation_failed.v1",
    }
    _, trace_id = await place(traced, "--customer", "carol", "--item", "GIZMO:9")
    spans = await spans_until(receiver, trace_id, keys)
    consumed = {
        s.attributes.get("messaging.rabbitmq.destination.routing_key")
        for s in spans
        if s.kind == "CONSUMER"
    }
    assert keys <= consumed
    assert {s.service for s in spans} == SERVICES
    assert "COMPENSATED" in {s.attributes.get("orderflow.saga.state") for s in spans}


async def _publish_raw(system: System, headers: dict[str, str]) -> tuple[str, str]:
    order_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "specversion": "1.0",
        "id": message_id,
        "source": "/test",
        "type": "order.place_order.v1",
        "time": "2026-11-26T12:00:00Z",
        "subject": order_id,
        "datacontenttype": "application/json",
        "data": {
            "order_id": order_id,
            "customer_id": "alice",
            "items": [{"sku": "WIDGET", "quantity": 1, "unit_price": "9.99"}],
        },
    }
    connection = await aio_pika.connect_robust(system.env["ORDERFLOW_AMQP_URL"])
    channel = await connection.channel()
    exchange = await channel.get_exchange("order.commands")
    await exchange.publish(
        aio_pika.Message(
            json.dumps(body).encode(),
            message_id=message_id,
            content_type="application/cloudevents+json",
            headers=headers,
        ),
        routing_key="order.place_order.v1",
    )
    await connection.close()
    return order_id, message_id


@pytest.mark.parametrize(
    "headers", [{}, {"traceparent": "00-not-a-trace-01"}], ids=["none", "malformed"]
)
async def test_a_message_without_a_valid_trace_is_processed_and_starts_a_new_trace(
    traced: System, receiver: OtlpReceiver, headers: dict[str, str]
) -> None:
    order_id, message_id = await _publish_raw(traced, headers)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (
            await traced.scalar("order_svc", "SELECT status FROM orders WHERE id=$1", order_id)
            == "CONFIRMED"
        ):
            break
        await asyncio.sleep(0.1)
    assert (
        await traced.scalar("order_svc", "SELECT status FROM orders WHERE id=$1", order_id)
        == "CONFIRMED"
    )
    await asyncio.sleep(0.5)
    [span] = [
        s
        for s in receiver.snapshot()
        if s.kind == "CONSUMER" and s.attributes.get("messaging.message.id") == message_id
    ]
    assert span.parent_span_id is None
    later = {s.service for s in receiver.spans_of_trace(span.trace_id)}
    assert {"order_svc", "saga"} <= later  # the new trace goes on through the saga


async def test_log_lines_written_while_handling_a_message_carry_its_trace_id(
    traced: System, receiver: OtlpReceiver
) -> None:
    order_id, trace_id = await place(traced, "--customer", "alice", "--item", "GADGET:1")
    spans = await spans_until(receiver, trace_id, HAPPY)
    span_ids = {s.span_id for s in spans}
    lines = []
    for raw in traced.log.getvalue().splitlines():
        _, _, payload = raw.partition("| ")
        if payload.startswith("{"):
            record = json.loads(payload)
            if record.get("order_id") == order_id:
                lines.append(record)
    handled = [r for r in lines if r["event"] == "consumer.handled"]
    assert len(handled) == 8
    assert {r["service"] for r in handled} == {"order_svc", "payment_svc", "inventory_svc", "saga"}
    for record in lines:
        assert record["trace_id"] == trace_id, record
        assert record["span_id"] in span_ids, record
