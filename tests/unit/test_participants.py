"""The participants' rules, pure: charges, refunds, tombstones, all-or-nothing stock."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
)
from contracts.order import OrderConfirmed, OrderCreated, OrderRejected, PlaceOrder
from contracts.payment import PaymentCaptured, PaymentDeclined, PaymentRefunded, ProcessPayment
from contracts.types import Line, PricedLine, QuotedLine
from inventory_svc.domain.model import ReservationStatus, Stock, release, reserve
from order_svc.domain.model import Order, OrderStatus, OrderTransitionRefused
from payment_svc.domain.model import Customer, PaymentStatus, process_payment, refund_payment

ORDER = str(uuid.uuid4())


def charge(amount: str = "30.00") -> ProcessPayment:
    return ProcessPayment(order_id=ORDER, customer_id="alice", amount=Decimal(amount))


def test_a_payment_charges_the_balance_once() -> None:
    alice = Customer("alice", Decimal("100.00"))
    payment = process_payment(charge(), existing=None, customer=alice)
    assert alice.balance == Decimal("70.00")
    assert payment.pull_events() == [
        PaymentCaptured(order_id=ORDER, customer_id="alice", amount=Decimal("30.00"))
    ]
    again = process_payment(charge(), existing=payment, customer=alice)
    assert alice.balance == Decimal("70.00")
    assert [type(e) for e in again.pull_events()] == [PaymentCaptured]


def test_insufficient_funds_and_unknown_customers_are_declined_without_a_charge() -> None:
    bob = Customer("bob", Decimal("5.00"))
    declined = process_payment(charge(), existing=None, customer=bob)
    assert bob.balance == Decimal("5.00")
    assert declined.status is PaymentStatus.DECLINED
    assert declined.pull_events() == [PaymentDeclined(order_id=ORDER, reason="insufficient funds")]
    nobody = process_payment(charge(), existing=None, customer=None)
    [event] = nobody.pull_events()
    assert isinstance(event, PaymentDeclined)
    assert "unknown customer" in event.reason


def test_a_refund_gives_the_money_back_once() -> None:
    alice = Customer("alice", Decimal("100.00"))
    payment = process_payment(charge(), existing=None, customer=alice)
    refund_payment(ORDER, existing=payment, customer=alice)
    refund_payment(ORDER, existing=payment, customer=alice)
    assert alice.balance == Decimal("100.00")
    assert payment.status is PaymentStatus.REFUNDED
    assert (
        payment.pull_events()[-2:] == [PaymentRefunded(order_id=ORDER, amount=Decimal("30.00"))] * 2
    )


def test_a_refund_before_its_charge_leaves_a_tombstone_and_the_late_charge_is_declined() -> None:
    alice = Customer("alice", Decimal("100.00"))
    tombstone = refund_payment(ORDER, existing=None, customer=None)
    assert tombstone.status is PaymentStatus.CANCELLED
    assert tombstone.pull_events() == [PaymentRefunded(order_id=ORDER, amount=Decimal("0.00"))]
    late = process_payment(charge(), existing=tombstone, customer=alice)
    assert alice.balance == Decimal("100.00")
    [event] = late.pull_events()
    assert isinstance(event, PaymentDeclined)
    assert "cancelled" in event.reason


def test_a_charge_after_a_refund_is_declined_and_a_refund_after_a_decline_returns_nothing() -> None:
    alice = Customer("alice", Decimal("100.00"))
    payment = process_payment(charge(), existing=None, customer=alice)
    refund_payment(ORDER, existing=payment, customer=alice)
    payment.pull_events()
    process_payment(charge(), existing=payment, customer=alice)
    assert alice.balance == Decimal("100.00")
    assert isinstance(payment.pull_events()[0], PaymentDeclined)
    declined = process_payment(charge("500.00"), existing=None, customer=alice)
    declined.pull_events()
    refund_payment(ORDER, existing=declined, customer=alice)
    assert declined.pull_events() == [PaymentRefunded(order_id=ORDER, amount=Decimal("0.00"))]
    assert alice.balance == Decimal("100.00")


def stock(**on_hand: int) -> dict[str, Stock]:
    return {sku: Stock(sku, n) for sku, n in on_hand.items()}


def test_a_reservation_takes_every_line_or_none() -> None:
    shelves = stock(WIDGET=5, GADGET=1)
    lines = (Line(sku="WIDGET", quantity=2), Line(sku="GADGET", quantity=2))
    failed = reserve(ORDER, lines, existing=None, stock=shelves)
    assert failed.status is ReservationStatus.FAILED
    assert shelves["WIDGET"].on_hand == 5
    [event] = failed.pull_events()
    assert event == InventoryReservationFailed(order_id=ORDER, reason="not enough stock for GADGET")
    ok = reserve(str(uuid.uuid4()), lines[:1], existing=None, stock=shelves)
    assert ok.pull_events() == [InventoryReserved(order_id=ok.order_id)]
    assert shelves["WIDGET"].on_hand == 3


def test_an_unknown_sku_fails_the_reservation_by_name() -> None:
    failed = reserve(ORDER, (Line(sku="NOPE", quantity=1),), existing=None, stock={})
    [event] = failed.pull_events()
    assert isinstance(event, InventoryReservationFailed)
    assert event.reason == "unknown SKU NOPE"


def test_a_release_returns_stock_once_and_a_release_before_reserve_leaves_a_tombstone() -> None:
    shelves = stock(WIDGET=5)
    reservation = reserve(ORDER, (Line(sku="WIDGET", quantity=4),), existing=None, stock=shelves)
    release(ORDER, existing=reservation, stock=shelves)
    release(ORDER, existing=reservation, stock=shelves)
    assert shelves["WIDGET"].on_hand == 5
    other = str(uuid.uuid4())
    tombstone = release(other, existing=None, stock=shelves)
    assert tombstone.pull_events() == [InventoryReleased(order_id=other)]
    late = reserve(other, (Line(sku="WIDGET", quantity=1),), existing=tombstone, stock=shelves)
    assert isinstance(late.pull_events()[0], InventoryReservationFailed)
    assert shelves["WIDGET"].on_hand == 5


def place(**overrides: object) -> PlaceOrder:
    fields: dict[str, object] = {
        "customer_id": "alice",
        "items": (
            PricedLine(sku="WIDGET", quantity=3, unit_price=Decimal("2.50")),
            QuotedLine(sku="GADGET", quantity=1),
        ),
    }
    fields.update(overrides)
    return PlaceOrder(**fields)  # type: ignore[arg-type]


CATALOG = {"WIDGET": Decimal("2.50"), "GADGET": Decimal("0.10")}


def placed(command: PlaceOrder, order_id: str = ORDER) -> Order:
    return Order.place(command, order_id=order_id, catalog=CATALOG, max_total=Decimal("1000"))


def test_an_order_is_placed_pending_with_its_total_in_decimal() -> None:
    order = placed(place())
    assert order.status is OrderStatus.PENDING
    assert order.total == Decimal("7.60")
    [event] = order.pull_events()
    assert isinstance(event, OrderCreated)
    assert event.total == Decimal("7.60")
    assert [i.unit_price for i in event.items] == [Decimal("2.50"), Decimal("0.10")]


def test_an_order_with_a_sku_twice_is_refused() -> None:
    line = PricedLine(sku="WIDGET", quantity=1, unit_price=Decimal("2.50"))
    order = placed(place(items=(line, line)))
    assert order.refused
    assert order.status is OrderStatus.REJECTED
    [event] = order.pull_events()
    assert isinstance(event, OrderRejected)
    assert "WIDGET" in event.reason


def test_an_order_ends_once_and_never_in_both_states() -> None:
    order = placed(place())
    order.pull_events()
    order.approve()
    order.approve()
    assert order.pull_events() == [OrderConfirmed(order_id=ORDER, total=Decimal("7.60"))]
    with pytest.raises(OrderTransitionRefused):
        order.reject("too late")
    other = placed(place(), str(uuid.uuid4()))
    other.reject("declined")
    other.reject("declined again")
    assert [type(e) for e in other.pull_events()] == [OrderCreated, OrderRejected]
