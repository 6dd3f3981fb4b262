"""The system owns its prices, and every order a client places is answered on order.events
(issue #11, points 4 and 5), with the real services as separate processes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import pytest

from contracts.order import PlaceOrder
from libs.testing.waiting import wait_until
from order_svc.catalog import list_items, set_price
from orderflow.check import check
from orderflow.dlq import list_letters
from orderflow.setup import seed_demo

from .conftest import System, cli, running_system
from .test_wire_contract import run_example

pytestmark = pytest.mark.e2e
ALICE = "SELECT balance FROM customers WHERE id='alice'"


class Events:
    """Every event on order.events, seen through a queue of our own (as any client may bind)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Event()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        doc = json.loads(message.body)
        self.seen.append((doc["type"], doc["data"]))
        self._arrived.set()

    def about(self, order_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(t, d) for t, d in self.seen if d.get("order_id") == order_id]

    async def answer(self, order_id: str, timeout: float = 30) -> tuple[str, dict[str, Any]]:
        """The first terminal event about ``order_id``."""
        deadline = time.monotonic() + timeout
        while True:
            for kind, data in self.about(order_id):
                if kind in ("order.order_confirmed.v1", "order.order_rejected.v1"):
                    return kind, data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer for order {order_id}; saw {self.seen[-10:]}")
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 1.0))


@asynccontextmanager
async def watching(system: System) -> AsyncIterator[Events]:
    connection = await aio_pika.connect_robust(system.env["ORDERFLOW_AMQP_URL"])
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind("order.events", routing_key="#")
        events = Events()
        await queue.consume(events.on_message, no_ack=True)
        yield events
    finally:
        await connection.close()


async def publish_raw(system: System, data: dict[str, Any]) -> str:
    """A PlaceOrder as any AMQP client may write it, data unchecked; returns the message id."""
    message_id = str(uuid.uuid4())
    body = {
        "specversion": "1.0",
        "id": message_id,
        "source": "/tests/e2e",
        "type": PlaceOrder.TYPE,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }
    connection = await aio_pika.connect_robust(system.env["ORDERFLOW_AMQP_URL"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("order.commands", ensure=False)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/cloudevents+json",
                message_id=message_id,
                type=PlaceOrder.TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=PlaceOrder.TYPE,
            mandatory=True,
        )
    finally:
        await connection.close()
    return message_id


async def place(system: System, customer: str, *items: tuple[str, int, str | None]) -> str:
    outcome = await system.client.place(
        customer_id=customer,
        items=[(s, q, None if p is None else Decimal(p)) for s, q, p in items],
    )
    return outcome.order_id


async def dead_letters(system: System) -> list[Any]:
    return await list_letters(system.settings, queue="order_svc.commands")


async def assert_refused(system: System, order_id: str) -> None:
    """Stored REJECTED and refused, total 0, no lines, no saga, nothing charged or reserved."""
    row = await system.scalar(
        "order_svc",
        "SELECT row(status, refused, total)::text FROM orders WHERE id = $1",
        order_id,
    )
    assert row == "(REJECTED,t,0.00)"
    for service, query in (
        ("order_svc", "SELECT count(*) FROM order_lines WHERE order_id = $1"),
        ("saga", "SELECT count(*) FROM saga_instance WHERE id = $1"),
        ("payment_svc", "SELECT count(*) FROM ledger WHERE order_id = $1"),
        ("inventory_svc", "SELECT count(*) FROM reservations WHERE order_id = $1"),
    ):
        assert await system.scalar(service, query, order_id) == 0, (service, query)


async def assert_invariants(system: System, timeout: float = 20) -> None:
    """`orderflow check` holds, refused orders (which have no saga, by design) included."""
    deadline = time.monotonic() + timeout
    while True:
        rest = (await check(system.settings)).violations
        if not rest:
            return
        if time.monotonic() > deadline:
            raise AssertionError("\n".join(rest[:20]))
        await asyncio.sleep(0.5)


async def test_a_wrong_price_is_answered_with_a_rejection_and_nothing_is_charged(
    system: System,
) -> None:
    async with watching(system) as events:
        order_id = await place(system, "alice", ("WIDGET", 2, "8.00"), ("GADGET", 1, None))
        kind, data = await events.answer(order_id)
        assert kind == "order.order_rejected.v1"
        assert data["reason"] == "price mismatch: WIDGET sent at 8.00, catalog price is 9.99"
        await system.wait([order_id])
        assert system.status(order_id) == "REJECTED"
        await assert_refused(system, order_id)
        assert [k for k, _ in events.about(order_id)] == ["order.order_rejected.v1"]
        assert await system.scalar("payment_svc", ALICE) == Decimal("1000.00")
        assert await dead_letters(system) == []
        # the saga hears the rejection, knows no such order and does nothing
        await wait_until(
            lambda: "saga.reply_for_unknown_instance" in system.log.getvalue(), timeout=30
        )
        assert "saga.reply_for_unknown_instance" in system.log.getvalue()
        await assert_invariants(system)


async def test_the_catalog_price_is_charged_and_a_new_price_applies_to_new_orders(
    system: System,
) -> None:
    async with watching(system) as events:
        first = await place(system, "alice", ("WIDGET", 2, None))
        await system.wait([first])
        assert system.status(first) == "CONFIRMED"
        created = [d for k, d in events.about(first) if k == "order.order_created.v1"]
        assert created[0]["items"] == [{"sku": "WIDGET", "quantity": 2, "unit_price": "9.99"}]
        assert created[0]["total"] == "19.98"
        assert await system.scalar("payment_svc", ALICE) == Decimal("980.02")

        change = await set_price(system.settings, "widget", "5.00")
        assert (change.previous, change.item.price) == (Decimal("9.99"), Decimal("5.00"))
        second = await place(system, "alice", ("WIDGET", 2, None))
        stale = await place(system, "alice", ("WIDGET", 1, "9.99"))
        await system.wait([second, stale])
        assert system.status(second) == "CONFIRMED"
        assert system.client.outcomes[second].total == Decimal("10.00")
        assert system.status(stale) == "REJECTED"
        assert system.client.outcomes[stale].reason == (
            "price mismatch: WIDGET sent at 9.99, catalog price is 5.00"
        )
        assert await system.scalar("payment_svc", ALICE) == Decimal("970.02")
        # a plain AMQP client may leave the price out too (SKU:QTY): the catalog's is charged
        out = await run_example(system, "alice", "WIDGET:1")
        assert '"unit_price": "5.00"' in out.splitlines()[1]
        assert out.splitlines()[-1].startswith("order.order_confirmed.v1")
        assert await system.scalar("payment_svc", ALICE) == Decimal("965.02")
        # an order already placed keeps its prices
        assert await system.scalar(
            "order_svc", "SELECT total FROM orders WHERE id = $1", first
        ) == Decimal("19.98")

        # the operator's commands: add a SKU, list the catalog
        code, out = await cli(
            system.env, "catalog", "set-price", "doohickey", "3.50", "--name", "Doohickey"
        )
        assert (code, out.strip()) == (0, "added DOOHICKEY (Doohickey) at 3.50"), out
        code, out = await cli(system.env, "catalog", "list")
        assert code == 0, out
        assert "5.00 USD" in out and "DOOHICKEY" in out and "5 SKU(s)" in out
        prices = {i.sku: i.price for i in await list_items(system.settings)}
        assert prices["DOOHICKEY"] == Decimal("3.50")
        assert prices["WIDGET"] == Decimal("5.00")
        # seeding again (what a re-run of `orderflow setup` does) changes no operator's price
        await seed_demo(system.settings)
        assert {i.sku: i.price for i in await list_items(system.settings)} == prices
        assert await dead_letters(system) == []
        await assert_invariants(system)


async def test_an_unknown_sku_a_sku_twice_and_a_total_over_the_cap_are_answered() -> None:
    async with (
        running_system(extra_env={"ORDERFLOW_ORDER__MAX_TOTAL": "100.00"}) as system,
        watching(system) as events,
    ):
        unknown = await place(system, "alice", ("WIDGET", 1, None), ("NOPE", 1, None))
        over = await place(system, "carol", ("GADGET", 5, None))  # 122.50
        at_cap = await place(system, "carol", ("GADGET", 4, None))  # 98.00
        twice = str(uuid.uuid4())
        line = {"sku": "WIDGET", "quantity": 1}
        await publish_raw(system, {"order_id": twice, "customer_id": "alice", "items": [line] * 2})
        answers = {o: await events.answer(o) for o in (unknown, over, at_cap, twice)}
        assert answers[unknown] == (
            "order.order_rejected.v1",
            {"order_id": unknown, "reason": "unknown SKU NOPE"},
        )
        assert answers[over][1]["reason"] == "order total 122.50 is over the limit of 100.00"
        assert answers[twice][1]["reason"] == "SKU listed more than once: WIDGET"
        assert answers[at_cap][0] == "order.order_confirmed.v1"
        for order_id in (unknown, over, twice):
            await assert_refused(system, order_id)
        assert await dead_letters(system) == []
        await assert_invariants(system)


async def test_a_place_order_with_invalid_data_is_answered_not_dead_lettered(
    system: System,
) -> None:
    async with watching(system) as events:
        order_id = str(uuid.uuid4())
        await publish_raw(
            system,
            {
                "order_id": order_id,
                "customer_id": "alice",
                "items": [{"sku": "WIDGET", "quantity": "abc"}],
            },
        )
        kind, data = await events.answer(order_id)
        assert kind == "order.order_rejected.v1"
        assert data["reason"].startswith("order.place_order.v1 data is invalid: items.0.quantity")
        await assert_refused(system, order_id)
        # the same garbage again (another message): the same answer, still no dead letter
        await publish_raw(system, {"order_id": order_id, "items": "garbage"})
        for _ in range(100):
            if len(events.about(order_id)) == 2:
                break
            await asyncio.sleep(0.1)
        assert events.about(order_id) == [(kind, data)] * 2
        assert await dead_letters(system) == []
        await assert_invariants(system)


async def test_garbage_naming_a_confirmed_orders_id_does_not_reject_it(system: System) -> None:
    async with watching(system) as events:
        order_id = await place(system, "alice", ("WIDGET", 1, None))
        await system.wait([order_id])
        assert system.status(order_id) == "CONFIRMED"
        message_id = await publish_raw(
            system, {"order_id": order_id, "customer_id": "mallory", "items": "garbage"}
        )
        for _ in range(100):
            letters = await dead_letters(system)
            if letters:
                break
            await asyncio.sleep(0.2)
        [letter] = letters
        assert letter.id == message_id
        assert letter.error_class == "InvalidMessageData"
        assert (
            await system.scalar(
                "order_svc", "SELECT row(status, refused)::text FROM orders WHERE id = $1", order_id
            )
            == "(CONFIRMED,f)"
        )
        assert [k for k, _ in events.about(order_id)] == [
            "order.order_created.v1",
            "order.order_confirmed.v1",
        ]
        assert await system.scalar("payment_svc", ALICE) == Decimal("990.01")
