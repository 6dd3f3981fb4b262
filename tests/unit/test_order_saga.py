"""Every path of the order saga, as a pure transition function: no broker, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from contracts.inventory import (
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
    ReserveInventory,
)
from contracts.order import (
    ApproveOrder,
    OrderConfirmed,
    OrderRejected,
    RejectOrder,
)
from contracts.payment import (
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    ProcessPayment,
    RefundPayment,
)
from libs.messages.registry import Message
from libs.saga.engine import start, transition
from libs.saga.state import (
    DeadlinePassed,
    OperatorCompensate,
    OperatorRetry,
    Reply,
    SagaState,
    Status,
    Transition,
)
from saga.domain.order_saga import order_saga
from tests.orders import order_created

SAGA = order_saga(deadline=10, retries=2)
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ORDER = str(uuid.uuid4())
CREATED = order_created(ORDER, quantity=2)


class Run:
    """Drives one instance and keeps what it sent, like the saga service would."""

    def __init__(self) -> None:
        t = start(SAGA, CREATED, now=T0)
        self.state: SagaState = t.state
        self.sent = list(t.commands)
        self.now = T0
        self.last: Transition = t

    def feed(self, message: Message) -> Transition:
        return self._apply(Reply(message, str(uuid.uuid4())))

    def _apply(self, event: object) -> Transition:
        t = transition(SAGA, self.state, event, now=self.now)  # type: ignore[arg-type]
        self.state, self.last = t.state, t
        self.sent.extend(t.commands)
        return t

    def expire(self) -> Transition:
        assert self.state.deadline_at is not None
        self.now = self.state.deadline_at + timedelta(milliseconds=1)
        return self._apply(DeadlinePassed())

    def operator(self, event: object) -> Transition:
        return self._apply(event)

    def sent_types(self) -> list[type]:
        return [type(s.command) for s in self.sent]


def captured() -> PaymentCaptured:
    return PaymentCaptured(order_id=ORDER, customer_id="alice", amount=Decimal("10.00"))


def test_the_happy_path_charges_reserves_approves_and_completes() -> None:
    run = Run()
    assert run.sent_types() == [ProcessPayment]
    assert run.sent[0].command == ProcessPayment(
        order_id=ORDER, customer_id="alice", amount=Decimal("10.00")
    )
    run.feed(captured())
    run.feed(InventoryReserved(order_id=ORDER))
    run.feed(OrderConfirmed(order_id=ORDER, total=Decimal("10.00")))
    assert run.state.status is Status.COMPLETED
    assert run.sent_types() == [ProcessPayment, ReserveInventory, ApproveOrder]
    assert run.state.deadline_at is None
    assert run.state.done == ("payment", "inventory", "approval")


def test_a_declined_payment_rejects_the_order_with_nothing_to_undo() -> None:
    run = Run()
    run.feed(PaymentDeclined(order_id=ORDER, reason="insufficient funds"))
    assert run.state.status is Status.COMPENSATING
    assert run.sent_types() == [ProcessPayment, RejectOrder]
    assert "insufficient funds" in run.sent[-1].command.reason  # type: ignore[attr-defined]
    run.feed(OrderRejected(order_id=ORDER, reason="payment: insufficient funds"))
    assert run.state.status is Status.COMPENSATED


def test_out_of_stock_refunds_the_payment_then_rejects() -> None:
    run = Run()
    run.feed(captured())
    run.feed(InventoryReservationFailed(order_id=ORDER, reason="not enough stock for WIDGET"))
    assert run.sent_types() == [ProcessPayment, ReserveInventory, RefundPayment]
    assert run.state.status is Status.COMPENSATING
    run.feed(PaymentRefunded(order_id=ORDER, amount=Decimal("10.00")))
    assert run.sent_types()[-1] is RejectOrder
    run.feed(OrderRejected(order_id=ORDER, reason="x"))
    assert run.state.status is Status.COMPENSATED


def test_a_step_that_times_out_is_re_sent_with_the_same_id_then_compensated() -> None:
    run = Run()
    first_id = run.sent[0].message_id
    run.expire()
    run.expire()
    assert [s.message_id for s in run.sent] == [first_id] * 3
    assert run.state.attempt == 3
    run.expire()  # retries=2: the third deadline gives up
    assert run.state.status is Status.COMPENSATING
    # the timed-out step is compensated too, without waiting (its participant may be down)
    assert run.sent_types()[-2:] == [RefundPayment, RejectOrder]
    run.feed(OrderRejected(order_id=ORDER, reason="payment: no reply"))
    assert run.state.status is Status.COMPENSATED


def test_an_inventory_timeout_releases_and_refunds_and_waits_only_for_the_refund() -> None:
    run = Run()
    run.feed(captured())
    for _ in range(3):
        run.expire()
    assert run.state.status is Status.COMPENSATING
    assert set(run.sent_types()[-2:]) == {ReleaseInventory, RefundPayment}
    assert [a.step for a in run.state.awaiting] == ["payment"]
    run.feed(PaymentRefunded(order_id=ORDER, amount=Decimal("10.00")))
    run.feed(OrderRejected(order_id=ORDER, reason="x"))
    assert run.state.status is Status.COMPENSATED


def test_the_approval_step_is_never_compensated_by_a_timeout() -> None:
    run = Run()
    run.feed(captured())
    run.feed(InventoryReserved(order_id=ORDER))
    for _ in range(10):
        run.expire()
    assert run.state.status is Status.RUNNING
    assert run.sent_types().count(ApproveOrder) == 11
    assert RefundPayment not in run.sent_types()
    run.feed(OrderConfirmed(order_id=ORDER, total=Decimal("10.00")))
    assert run.state.status is Status.COMPLETED


def test_a_compensation_that_times_out_is_re_sent_until_it_is_answered() -> None:
    run = Run()
    run.feed(captured())
    run.feed(InventoryReservationFailed(order_id=ORDER, reason="none left"))
    refund_id = run.sent[-1].message_id
    for _ in range(5):
        run.expire()
    assert run.state.status is Status.COMPENSATING
    refunds = [s for s in run.sent if isinstance(s.command, RefundPayment)]
    assert len(refunds) == 6
    assert {s.message_id for s in refunds} == {refund_id}


def test_duplicate_replies_are_ignored() -> None:
    run = Run()
    run.feed(captured())
    version = run.state.version
    t = run.feed(captured())
    assert not t.accepted
    assert t.log[0].event == "ignored"
    assert run.state.version == version
    assert run.sent_types() == [ProcessPayment, ReserveInventory]


def test_replies_after_compensation_started_are_ignored() -> None:
    run = Run()
    run.feed(captured())
    run.feed(InventoryReservationFailed(order_id=ORDER, reason="none"))
    sent_before = len(run.sent)
    assert not run.feed(InventoryReserved(order_id=ORDER)).accepted
    assert not run.feed(captured()).accepted
    assert len(run.sent) == sent_before
    assert run.state.status is Status.COMPENSATING


def test_a_late_payment_captured_after_a_timeout_driven_refund_changes_nothing() -> None:
    run = Run()
    for _ in range(3):
        run.expire()
    assert RefundPayment in run.sent_types()
    late = run.feed(captured())
    assert not late.accepted
    assert late.log[0].detail["why"] == "no command awaits this reply"
    run.feed(OrderRejected(order_id=ORDER, reason="x"))
    assert not run.feed(PaymentRefunded(order_id=ORDER, amount=Decimal("10.00"))).accepted
    assert run.state.status is Status.COMPENSATED


def test_an_early_deadline_tick_does_nothing() -> None:
    run = Run()
    t = transition(SAGA, run.state, DeadlinePassed(), now=T0 + timedelta(seconds=1))
    assert not t.accepted
    assert t.commands == ()


def test_an_operator_retry_re_sends_the_current_step_and_is_logged() -> None:
    run = Run()
    run.feed(captured())
    t = run.operator(OperatorRetry(operator="dana", reason="inventory was restarted"))
    assert [type(s.command) for s in t.commands] == [ReserveInventory]
    assert t.commands[0].message_id == run.sent[1].message_id
    assert t.log[0].event == "operator_retry"
    assert all(
        e.detail["operator"] == "dana" and e.detail["reason"] == "inventory was restarted"
        for e in t.log
    )


def test_an_operator_can_force_compensation_but_not_after_the_pivot() -> None:
    run = Run()
    run.feed(captured())
    t = run.operator(OperatorCompensate("customer called", operator="dana"))
    assert t.log[0].event == "operator_compensate"
    assert {(e.detail["operator"], e.detail["reason"]) for e in t.log} == {
        ("dana", "customer called")
    }
    assert {type(s.command) for s in t.commands} == {ReleaseInventory, RefundPayment}
    late = Run()
    late.feed(captured())
    late.feed(InventoryReserved(order_id=ORDER))
    refused = late.operator(OperatorCompensate("changed my mind", operator="eve"))
    assert not refused.accepted
    assert "too late" in refused.log[0].detail["why"]
    assert refused.log[0].detail["operator"] == "eve"  # a refusal names who asked, too


def test_state_survives_its_json_form() -> None:
    run = Run()
    run.feed(captured())
    assert SagaState.from_json(run.state.to_json()) == run.state


def test_replies_from_the_same_run_give_the_same_message_ids() -> None:
    a, b = Run(), Run()
    assert [s.message_id for s in a.sent] == [s.message_id for s in b.sent]


@pytest.mark.parametrize(
    "reply", [InventoryReserved(order_id=ORDER), OrderConfirmed(order_id=ORDER, total=Decimal(1))]
)
def test_a_reply_for_a_later_step_arriving_early_is_ignored(reply: Message) -> None:
    run = Run()
    assert not run.feed(reply).accepted
    assert run.state.step == "payment"
