"""The steps a saga page draws: done, awaited, to come, and what a failure would undo."""

from __future__ import annotations

from decimal import Decimal

from contracts.inventory import InventoryReservationFailed, InventoryReserved
from contracts.order import OrderConfirmed, OrderRejected
from libs.saga.browse import plan
from libs.saga.state import OperatorCompensate
from tests.unit.test_order_saga import ORDER, SAGA, Run, captured


def marks(run: Run) -> list[tuple[str, str, str]]:
    return [(s.name, s.kind, s.state) for s in plan(SAGA, run.state.to_json())]


def test_a_new_saga_awaits_payment_with_the_rest_to_come() -> None:
    assert marks(Run()) == [
        ("payment", "action", "awaiting"),
        ("inventory", "action", "to come"),
        ("approval", "action", "to come"),
        ("failure", "failure", "if it fails"),
    ]


def test_after_payment_a_failure_would_refund_it() -> None:
    run = Run()
    run.feed(captured())
    assert marks(run) == [
        ("payment", "action", "done"),
        ("inventory", "action", "awaiting"),
        ("approval", "action", "to come"),
        ("payment", "compensation", "if it fails"),
        ("failure", "failure", "if it fails"),
    ]
    assert [s.pivot for s in plan(SAGA, run.state.to_json()) if s.kind == "action"] == [
        False,
        False,
        True,  # approval never gives up: past it, compensation is refused
    ]


def test_compensating_shows_the_refund_awaited_then_the_rejection() -> None:
    run = Run()
    run.feed(captured())
    run.feed(InventoryReservationFailed(order_id=ORDER, reason="out of stock"))
    assert marks(run) == [
        ("payment", "action", "done"),
        ("payment", "compensation", "awaiting"),
        ("failure", "failure", "to come"),
    ]


def test_completed_and_compensated_sagas_have_nothing_to_come() -> None:
    run = Run()
    run.feed(captured())
    run.feed(InventoryReserved(order_id=ORDER))
    run.feed(OrderConfirmed(order_id=ORDER, total=Decimal("10.00")))
    assert {m[2] for m in marks(run)} == {"done"}
    declined = Run()
    declined.operator(OperatorCompensate("test"))
    declined.feed(OrderRejected(order_id=ORDER, reason="test"))
    assert marks(declined) == [("failure", "failure", "done")]
