"""Orders the system refuses up front, pure: the catalog's prices are charged, and an order that
cannot be placed as sent is REJECTED at once (no lines, total 0), answered with OrderRejected."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from contracts import REGISTRY
from contracts.order import OrderCreated, OrderRejected, PlaceOrder
from contracts.types import PricedLine, QuotedLine
from libs.errors import InvalidMessageData
from libs.messages.envelope import Envelope
from libs.service.runner import HandlerContext
from order_svc import handlers
from order_svc.adapters import repository
from order_svc.bootstrap import definition
from order_svc.domain.model import Order, OrderStatus, refusal
from order_svc.settings import OrderSettings

ORDER = str(uuid.uuid4())
CATALOG = {"WIDGET": Decimal("9.99"), "GADGET": Decimal("24.50"), "GIZMO": Decimal("149.00")}
CAP = Decimal("100000.00")


def line(sku: str = "WIDGET", quantity: int = 1, price: str | None = None) -> QuotedLine:
    return QuotedLine(
        sku=sku, quantity=quantity, unit_price=None if price is None else Decimal(price)
    )


def command(*items: QuotedLine, customer: str = "alice") -> PlaceOrder:
    return PlaceOrder(order_id=ORDER, customer_id=customer, items=items or (line(),))


def place(*items: QuotedLine, catalog: dict[str, Decimal] = CATALOG, cap: Decimal = CAP) -> Order:
    return Order.place(command(*items), order_id=ORDER, catalog=catalog, max_total=cap)


def refused_with(order: Order) -> str:
    """The reason of a refused order, after checking everything a refusal is."""
    assert order.refused
    assert order.status is OrderStatus.REJECTED
    assert order.lines == ()
    assert order.total == Decimal("0.00")
    [event] = order.pull_events()
    assert isinstance(event, OrderRejected)
    assert event.order_id == ORDER
    assert event.reason == order.reason
    return event.reason


def test_an_order_without_prices_is_placed_at_the_catalogs_prices() -> None:
    order = place(line("WIDGET", 2), line("GADGET", 1))
    assert not order.refused
    assert order.status is OrderStatus.PENDING
    assert order.total == Decimal("44.48")
    [event] = order.pull_events()
    assert event == OrderCreated(
        order_id=ORDER,
        customer_id="alice",
        items=(
            PricedLine(sku="WIDGET", quantity=2, unit_price=Decimal("9.99")),
            PricedLine(sku="GADGET", quantity=1, unit_price=Decimal("24.50")),
        ),
        total=Decimal("44.48"),
        currency="USD",
    )


def test_a_price_equal_to_the_catalogs_is_accepted_however_it_is_written() -> None:
    order = place(line("WIDGET", 1, "9.990"), line("GIZMO", 1, "149"))
    assert not order.refused
    assert order.total == Decimal("158.99")


def test_a_price_that_is_not_the_catalogs_refuses_the_order_naming_sku_and_both_prices() -> None:
    reason = refused_with(place(line("WIDGET", 2, "8.00"), line("GADGET", 1)))
    assert reason == "price mismatch: WIDGET sent at 8.00, catalog price is 9.99"


def test_a_zero_price_sent_is_a_mismatch_too() -> None:
    reason = refused_with(place(line("WIDGET", 1, "0")))
    assert reason == "price mismatch: WIDGET sent at 0.00, catalog price is 9.99"


def test_an_unknown_sku_refuses_the_order_by_name() -> None:
    reason = refused_with(place(line("WIDGET", 1), line("NOPE", 1), line("NADA", 2)))
    assert reason == "unknown SKU NOPE, NADA"


def test_an_empty_catalog_knows_no_sku() -> None:
    assert refused_with(place(line("WIDGET"), catalog={})) == "unknown SKU WIDGET"


def test_a_sku_listed_twice_is_a_refusal_not_a_dead_letter() -> None:
    reason = refused_with(place(line("WIDGET", 1), line("GADGET", 1), line("WIDGET", 2)))
    assert reason == "SKU listed more than once: WIDGET"


def test_a_zero_total_is_refused() -> None:
    # impossible with the database's catalog (price > 0, quantity > 0): kept as a last guard
    reason = refused_with(place(line("FREEBIE", 3), catalog={"FREEBIE": Decimal("0")}))
    assert reason == "order total is 0.00: nothing to charge"


def test_a_total_over_the_cap_is_refused_and_one_at_the_cap_is_not() -> None:
    reason = refused_with(place(line("GIZMO", 10), cap=Decimal("1000")))
    assert reason == "order total 1490.00 is over the limit of 1000.00"
    assert not place(line("GIZMO", 10), cap=Decimal("1490.00")).refused


def test_the_default_cap_refuses_a_huge_order() -> None:
    # 10 000 gizmos at 149.00 = 1 490 000.00, over the default 100 000.00
    reason = refused_with(place(line("GIZMO", 10_000), cap=OrderSettings().max_total))
    assert "over the limit of 100000.00" in reason


def test_the_first_broken_rule_is_the_reason() -> None:
    # duplicate before unknown, unknown before price
    assert refused_with(place(line("NOPE"), line("NOPE"))).startswith("SKU listed more than once")
    assert refused_with(place(line("NOPE"), line("WIDGET", 1, "1.00"))) == "unknown SKU NOPE"


def test_a_long_reason_is_cut_to_the_contracts_limit() -> None:
    items = tuple(line(f"UNKNOWN-SKU-NUMBER-{n:03d}") for n in range(60))
    reason = refused_with(place(*items))
    assert len(reason) == 500
    assert reason.startswith("unknown SKU UNKNOWN-SKU-NUMBER-000, ")
    assert reason.endswith("…")


def test_refusal_says_none_for_a_good_order() -> None:
    assert refusal(command(line("WIDGET", 1, "9.99")), catalog=CATALOG, max_total=CAP) is None


def test_a_refused_order_answers_the_same_again_and_cannot_be_approved() -> None:
    order = place(line("NOPE"))
    first = order.pull_events()
    order.restate_refusal()
    assert order.pull_events() == first
    with pytest.raises(InvalidMessageData):
        order.approve()
    placed = place(line("WIDGET"))
    with pytest.raises(InvalidMessageData):
        placed.restate_refusal()


def test_a_price_is_optional_on_place_order_and_required_on_order_created() -> None:
    data = {"customer_id": "alice", "items": [{"sku": "WIDGET", "quantity": 1}]}
    parsed = PlaceOrder.model_validate(data)
    assert parsed.items[0].unit_price is None
    legacy = PlaceOrder.model_validate(
        {**data, "items": [{"sku": "WIDGET", "quantity": 1, "unit_price": "9.99"}]}
    )
    assert legacy.items[0].unit_price == Decimal("9.99")
    # a PricedLine is a QuotedLine: callers that build PlaceOrder with priced lines still can
    assert PlaceOrder(
        customer_id="alice",
        items=(PricedLine(sku="WIDGET", quantity=1, unit_price=Decimal("9.99")),),
    ).items[0].unit_price == Decimal("9.99")
    with pytest.raises(ValueError, match="unit_price"):
        OrderCreated.model_validate(
            {
                "order_id": ORDER,
                "customer_id": "alice",
                "items": [{"sku": "WIDGET", "quantity": 1}],
                "total": "9.99",
                "currency": "USD",
            }
        )


def test_the_cap_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OrderSettings().max_total == Decimal("100000.00")
    monkeypatch.setenv("ORDERFLOW_ORDER__MAX_TOTAL", "50.00")
    assert OrderSettings().max_total == Decimal("50.00")


# -- the handler and the refuser, with the repository replaced by a dictionary ---------------


class FakeOrders:
    def __init__(self) -> None:
        self.rows: dict[str, Order] = {}

    async def add(self, conn: Any, order: Order, *, placed_by: str) -> bool:
        if order.id in self.rows:
            return False
        self.rows[order.id] = order
        return True

    async def get(self, conn: Any, order_id: str, *, for_update: bool = True) -> Order | None:
        stored = self.rows.get(order_id)
        if stored is None:
            return None
        return Order(
            id=stored.id,
            customer_id=stored.customer_id,
            lines=stored.lines,
            currency=stored.currency,
            status=stored.status,
            reason=stored.reason,
            refused=stored.refused,
        )

    async def prices(self, conn: Any, skus: Any) -> dict[str, Decimal]:
        return {s: p for s, p in CATALOG.items() if s in skus}


@pytest.fixture
def orders(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOrders]:
    fake = FakeOrders()
    monkeypatch.setattr(repository, "add", fake.add)
    monkeypatch.setattr(repository, "get", fake.get)
    monkeypatch.setattr(repository, "prices", fake.prices)
    yield fake
    handlers.configure(OrderSettings())


def envelope(data: dict[str, Any], message_id: str | None = None) -> Envelope:
    return Envelope(
        id=message_id or str(uuid.uuid4()),
        source="/test",
        type=PlaceOrder.TYPE,
        time=datetime.now(UTC),
        data=data,
    )


def context(env: Envelope) -> HandlerContext:
    return HandlerContext(conn=None, envelope=env, registry=REGISTRY, source="/orderflow/order_svc")  # type: ignore[arg-type]


def written(ctx: HandlerContext) -> list[tuple[str, dict[str, Any]]]:
    ctx.write_collected()
    return [(row[1], json.loads(row[6])["data"]) for row in ctx.outbox.pending]


def invalid(data: dict[str, Any]) -> InvalidMessageData:
    try:
        REGISTRY.parse(envelope(data))
    except InvalidMessageData as exc:
        return exc
    raise AssertionError("the data is valid")


async def test_the_handler_applies_the_configured_cap(orders: FakeOrders) -> None:
    data = {"order_id": ORDER, "customer_id": "alice", "items": [{"sku": "GADGET", "quantity": 3}]}
    handlers.configure(OrderSettings(max_total=Decimal("50.00")))
    ctx = context(envelope(data))
    await handlers.place_order(PlaceOrder.model_validate(data), ctx)
    [(kind, event)] = written(ctx)
    assert kind == OrderRejected.TYPE
    assert event["reason"] == "order total 73.50 is over the limit of 50.00"
    assert orders.rows[ORDER].refused


async def test_a_repeated_place_order_of_a_refused_order_is_answered_the_same(
    orders: FakeOrders,
) -> None:
    data = {"order_id": ORDER, "customer_id": "alice", "items": [{"sku": "NOPE", "quantity": 1}]}
    answers = []
    for _ in range(2):
        ctx = context(envelope(data))
        await handlers.place_order(PlaceOrder.model_validate(data), ctx)
        answers.append(written(ctx))
    assert (
        answers[0]
        == answers[1]
        == [(OrderRejected.TYPE, {"order_id": ORDER, "reason": "unknown SKU NOPE"})]
    )


async def test_the_refuser_stores_a_refused_order_and_answers_with_the_broken_rule(
    orders: FakeOrders,
) -> None:
    data = {
        "order_id": ORDER,
        "customer_id": "alice",
        "items": [{"sku": "WIDGET", "quantity": "abc"}],
    }
    ctx = context(envelope(data))
    assert await handlers.refuse_place_order(ctx.envelope, invalid(data), ctx)
    [(kind, event)] = written(ctx)
    assert kind == OrderRejected.TYPE
    assert event["order_id"] == ORDER
    assert "items.0.quantity" in event["reason"]
    stored = orders.rows[ORDER]
    assert (stored.refused, stored.status, stored.customer_id, stored.lines) == (
        True,
        OrderStatus.REJECTED,
        "alice",
        (),
    )


async def test_the_refuser_derives_the_order_id_as_place_order_does(orders: FakeOrders) -> None:
    message_id = str(uuid.uuid4())
    bad = {"order_id": "not-a-uuid", "customer_id": 42, "items": []}
    ctx = context(envelope(bad, message_id))
    assert await handlers.refuse_place_order(ctx.envelope, invalid(bad), ctx)
    [derived] = orders.rows
    assert derived == handlers.order_id_for(None, message_id)
    assert orders.rows[derived].customer_id is None
    # a valid PlaceOrder without an order id, in a message with the same id, names that order
    good = {"customer_id": "alice", "items": [{"sku": "WIDGET", "quantity": 1}]}
    ctx = context(envelope(good, message_id))
    await handlers.place_order(PlaceOrder.model_validate(good), ctx)
    assert len(orders.rows) == 1  # the same id: a repeat of the refused order
    [(kind, _)] = written(ctx)
    assert kind == OrderRejected.TYPE


async def test_the_refuser_never_rejects_an_existing_order(orders: FakeOrders) -> None:
    good = {"order_id": ORDER, "customer_id": "alice", "items": [{"sku": "WIDGET", "quantity": 1}]}
    await handlers.place_order(PlaceOrder.model_validate(good), context(envelope(good)))
    assert not orders.rows[ORDER].refused
    garbage = {"order_id": ORDER, "items": "garbage"}
    ctx = context(envelope(garbage))
    assert not await handlers.refuse_place_order(ctx.envelope, invalid(garbage), ctx)
    assert written(ctx) == []
    assert orders.rows[ORDER].status is OrderStatus.PENDING


async def test_the_refusal_reason_is_cut_to_500_characters(orders: FakeOrders) -> None:
    data = {"order_id": ORDER, "customer_id": "alice", "items": [{"sku": "x" * 40}] * 50}
    error = invalid(data)
    error = InvalidMessageData(str(error) + " and more" * 100)
    ctx = context(envelope(data))
    assert await handlers.refuse_place_order(ctx.envelope, error, ctx)
    [(_, event)] = written(ctx)
    assert len(event["reason"]) == 500


def test_the_service_registers_the_refuser_and_takes_the_cap_from_settings() -> None:
    try:
        service = definition(OrderSettings(max_total=Decimal("12.34")))
        assert service.refusals == {PlaceOrder.TYPE: handlers.refuse_place_order}
        assert handlers._settings.max_total == Decimal("12.34")
    finally:
        handlers.configure(OrderSettings())
