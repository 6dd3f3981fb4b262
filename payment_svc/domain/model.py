"""Balances and payments: one charge per order at most, one refund at most, never negative.

A payment row exists per order once any command for it arrived:
- CAPTURED: charged; a refund moves it to REFUNDED and gives the money back.
- DECLINED: not charged (unknown customer, insufficient funds, or cancelled by a tombstone).
- REFUNDED: charged, then given back.
- CANCELLED: the tombstone a refund leaves when it arrives before its charge, so that the late
  ProcessPayment is declined instead of charging an order that is being rejected.
Re-processing a command answers with the event of the current state and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from contracts.payment import (
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    ProcessPayment,
)
from libs.aggregate import AggregateRoot
from libs.messages import Message

ZERO = Decimal("0.00")


class PaymentStatus(StrEnum):
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"
    CANCELLED = "CANCELLED"


@dataclass(eq=False)
class Customer:
    id: str
    balance: Decimal


@dataclass(eq=False)
class Payment(AggregateRoot):
    order_id: str
    customer_id: str | None
    amount: Decimal
    status: PaymentStatus
    reason: str | None = None
    aggregate_type = "payment"

    @property
    def aggregate_id(self) -> str:
        return self.order_id

    def current_answer(self) -> Message:
        """The event that describes this payment, for a repeated command."""
        if self.status is PaymentStatus.CAPTURED:
            return PaymentCaptured(
                order_id=self.order_id, customer_id=self.customer_id or "", amount=self.amount
            )
        if self.status is PaymentStatus.REFUNDED:
            return PaymentRefunded(order_id=self.order_id, amount=self.amount)
        return PaymentDeclined(order_id=self.order_id, reason=self.reason or "declined")


def process_payment(
    command: ProcessPayment, *, existing: Payment | None, customer: Customer | None
) -> Payment:
    """Charge once, or decline; the returned payment carries the event to publish."""
    if existing is not None:
        if existing.status in (PaymentStatus.CANCELLED, PaymentStatus.REFUNDED):
            reason = "payment for this order was cancelled before it was charged"
            if existing.status is PaymentStatus.REFUNDED:
                reason = "payment for this order was already refunded"
            existing.record(PaymentDeclined(order_id=command.order_id, reason=reason))
        else:
            existing.record(existing.current_answer())
        return existing
    if customer is None:
        return _declined(command, f"unknown customer {command.customer_id}")
    if customer.balance < command.amount:
        return _declined(command, "insufficient funds")
    customer.balance -= command.amount
    payment = Payment(
        order_id=command.order_id,
        customer_id=customer.id,
        amount=command.amount,
        status=PaymentStatus.CAPTURED,
    )
    payment.record(payment.current_answer())
    return payment


def _declined(command: ProcessPayment, reason: str) -> Payment:
    payment = Payment(
        order_id=command.order_id,
        customer_id=command.customer_id,
        amount=ZERO,
        status=PaymentStatus.DECLINED,
        reason=reason,
    )
    payment.record(payment.current_answer())
    return payment


def refund_payment(
    order_id: str, *, existing: Payment | None, customer: Customer | None
) -> Payment:
    """Give a captured charge back once; leave a tombstone when nothing was charged yet."""
    if existing is None:
        tombstone = Payment(
            order_id=order_id,
            customer_id=None,
            amount=ZERO,
            status=PaymentStatus.CANCELLED,
            reason="refunded before charge",
        )
        tombstone.record(PaymentRefunded(order_id=order_id, amount=ZERO))
        return tombstone
    if existing.status is PaymentStatus.CAPTURED:
        if customer is None:
            raise LookupError(f"customer {existing.customer_id} of a captured payment is gone")
        customer.balance += existing.amount
        existing.status = PaymentStatus.REFUNDED
        existing.record(PaymentRefunded(order_id=order_id, amount=existing.amount))
        return existing
    refunded = existing.amount if existing.status is PaymentStatus.REFUNDED else ZERO
    existing.record(PaymentRefunded(order_id=order_id, amount=refunded))
    return existing
