"""Orders: placed PENDING, then CONFIRMED or REJECTED, exactly once.

Pure: no I/O, no clock; every change records the event that tells the world about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from libs.aggregate import AggregateRoot
from libs.contracts.order import OrderConfirmed, OrderCreated, OrderRejected, PlaceOrder
from libs.errors import InvalidMessageData


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"


TERMINAL = frozenset({OrderStatus.CONFIRMED, OrderStatus.REJECTED})


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(eq=False)
class Order(AggregateRoot):
    id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    currency: str
    status: OrderStatus = OrderStatus.PENDING
    reason: str | None = None
    version: int = 0
    aggregate_type = "order"

    @property
    def aggregate_id(self) -> str:
        return self.id

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00")).quantize(Decimal("0.01"))

    @classmethod
    def place(cls, command: PlaceOrder, *, order_id: str) -> Order:
        """A new PENDING order; raises InvalidMessageData when the lines make no sense."""
        skus = [item.sku for item in command.items]
        duplicates = sorted({s for s in skus if skus.count(s) > 1})
        if duplicates:
            raise InvalidMessageData(f"SKU listed more than once: {', '.join(duplicates)}")
        order = cls(
            id=order_id,
            customer_id=command.customer_id,
            lines=tuple(OrderLine(i.sku, i.quantity, i.unit_price) for i in command.items),
            currency=command.currency,
        )
        order.record(
            OrderCreated(
                order_id=order.id,
                customer_id=order.customer_id,
                items=command.items,
                total=order.total,
                currency=command.currency,
            )
        )
        return order

    def approve(self) -> None:
        """PENDING → CONFIRMED; approving a confirmed order again changes nothing."""
        if self.status is OrderStatus.CONFIRMED:
            return
        if self.status is OrderStatus.REJECTED:
            raise OrderTransitionRefused(f"order {self.id} is already REJECTED ({self.reason})")
        self.status = OrderStatus.CONFIRMED
        self.record(OrderConfirmed(order_id=self.id, total=self.total))

    def reject(self, reason: str) -> None:
        """PENDING → REJECTED; rejecting a rejected order again changes nothing."""
        if self.status is OrderStatus.REJECTED:
            return
        if self.status is OrderStatus.CONFIRMED:
            raise OrderTransitionRefused(f"order {self.id} is already CONFIRMED")
        self.status = OrderStatus.REJECTED
        self.reason = reason
        self.record(OrderRejected(order_id=self.id, reason=reason))


class OrderTransitionRefused(InvalidMessageData):
    """A command that would move a terminal order to the other terminal state."""
