"""The payment context: charging customers once per order, refunding once."""

from __future__ import annotations

from contracts.types import Currency, Id, Money, OrderId, Reason
from libs.messages.registry import Command, Event


class ProcessPayment(Command):
    TYPE = "payment.process_payment.v1"
    order_id: OrderId
    customer_id: Id
    amount: Money
    currency: Currency = "USD"


class RefundPayment(Command):
    TYPE = "payment.refund_payment.v1"
    order_id: OrderId
    reason: Reason = ""


class PaymentCaptured(Event):
    TYPE = "payment.payment_captured.v1"
    order_id: OrderId
    customer_id: Id
    amount: Money


class PaymentDeclined(Event):
    TYPE = "payment.payment_declined.v1"
    order_id: OrderId
    reason: Reason


class PaymentRefunded(Event):
    """``amount`` is what went back to the customer: zero when nothing had been charged."""

    TYPE = "payment.payment_refunded.v1"
    order_id: OrderId
    amount: Money


MESSAGES = (ProcessPayment, RefundPayment, PaymentCaptured, PaymentDeclined, PaymentRefunded)
