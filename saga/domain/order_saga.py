"""The order saga: payment, then inventory, then approval; refund and release on failure.

``approval`` is the pivot: once ApproveOrder is sent the order will be confirmed, so that step
never times out into compensation (it is re-sent until order_svc answers).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
    ReserveInventory,
)
from contracts.order import (
    ApproveOrder,
    OrderConfirmed,
    OrderCreated,
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
from contracts.types import Line
from libs.messages import Event, Message
from libs.saga import Data, SagaDefinition, Step


def _data(event: Event) -> dict[str, Any]:
    assert isinstance(event, OrderCreated)
    return {
        "order_id": event.order_id,
        "customer_id": event.customer_id,
        "items": [{"sku": i.sku, "quantity": i.quantity} for i in event.items],
        "total": str(event.total),
        "currency": event.currency,
    }


def _key(message: Message) -> str:
    order_id = getattr(message, "order_id", None)
    if not isinstance(order_id, str):
        raise TypeError(f"{type(message).__name__} carries no order_id")
    return order_id


def _charge(d: Data) -> ProcessPayment:
    return ProcessPayment(
        order_id=d["order_id"],
        customer_id=d["customer_id"],
        amount=Decimal(d["total"]),
        currency=d["currency"],
    )


def _refund(d: Data) -> RefundPayment:
    return RefundPayment(order_id=d["order_id"], reason="order is being rejected")


def _reserve(d: Data) -> ReserveInventory:
    return ReserveInventory(order_id=d["order_id"], items=tuple(Line(**i) for i in d["items"]))


def _release(d: Data) -> ReleaseInventory:
    return ReleaseInventory(order_id=d["order_id"])


def _approve(d: Data) -> ApproveOrder:
    return ApproveOrder(order_id=d["order_id"])


def _reject(d: Data, reason: str) -> RejectOrder:
    return RejectOrder(order_id=d["order_id"], reason=reason[:500])


NAME = "order"
"""The saga's name in saga_instance and saga_log (what operator tools look it up by)."""


def order_saga(*, deadline: float = 10.0, retries: int = 2) -> SagaDefinition:
    """The definition, with each step's deadline (seconds) and re-send count."""
    return SagaDefinition(
        name=NAME,
        start=OrderCreated,
        data=_data,
        key=_key,
        steps=(
            Step(
                name="payment",
                command=ProcessPayment,
                action=_charge,
                success=PaymentCaptured,
                failure=PaymentDeclined,
                compensation_command=RefundPayment,
                compensation=_refund,
                compensation_reply=PaymentRefunded,
                deadline=deadline,
                retries=retries,
            ),
            Step(
                name="inventory",
                command=ReserveInventory,
                action=_reserve,
                success=InventoryReserved,
                failure=InventoryReservationFailed,
                compensation_command=ReleaseInventory,
                compensation=_release,
                compensation_reply=InventoryReleased,
                deadline=deadline,
                retries=retries,
            ),
            Step(
                name="approval",
                command=ApproveOrder,
                action=_approve,
                success=OrderConfirmed,
                deadline=deadline,
                retries=None,
            ),
        ),
        failure_command=RejectOrder,
        failure_action=_reject,
        failure_reply=OrderRejected,
        failure_deadline=deadline,
    )
