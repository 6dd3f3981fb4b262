"""Orders: placed PENDING, then CONFIRMED or REJECTED, exactly once.

The system owns its prices: a line is charged the catalog's unit price, never the client's. An
order that cannot be placed as sent (a SKU twice, an unknown SKU, a price that is not the
catalog's, nothing to charge, a total over the cap, data that fails the schema) is *refused*:
stored REJECTED at once with ``refused`` set, total 0 and no lines, answered with
``OrderRejected`` and never given to the saga (no ``OrderCreated``).

Pure: no I/O, no clock; every change records the event that tells the world about it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from contracts.order import OrderConfirmed, OrderCreated, OrderRejected, PlaceOrder
from contracts.types import PricedLine
from libs.aggregate import AggregateRoot
from libs.errors import InvalidMessageData

CENT = Decimal("0.01")
REASON_LIMIT = 500
"""The contract's limit on ``OrderRejected.reason``."""


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


def limit_reason(reason: str) -> str:
    """A reason that fits the contract (at most 500 characters)."""
    return reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 1] + "…"


def refusal(
    command: PlaceOrder, *, catalog: Mapping[str, Decimal], max_total: Decimal
) -> str | None:
    """Why ``command`` cannot be placed, or None. ``catalog`` maps SKU → unit price (it may
    hold more SKUs than the order names). The rules, first broken one wins: a SKU at most once;
    every SKU in the catalog; a ``unit_price``, when given, equal to the catalog's; a total
    above zero; a total at most ``max_total``."""
    counts = Counter(item.sku for item in command.items)
    duplicates = sorted(sku for sku, n in counts.items() if n > 1)
    if duplicates:
        return limit_reason(f"SKU listed more than once: {', '.join(duplicates)}")
    unknown = [item.sku for item in command.items if item.sku not in catalog]
    if unknown:
        return limit_reason(f"unknown SKU {', '.join(unknown)}")
    wrong = [
        f"{item.sku} sent at {_money(item.unit_price)}, catalog price is {_money(catalog[item.sku])}"
        for item in command.items
        if item.unit_price is not None and item.unit_price != catalog[item.sku]
    ]
    if wrong:
        return limit_reason("price mismatch: " + "; ".join(wrong))
    total = _money(sum((catalog[i.sku] * i.quantity for i in command.items), Decimal(0)))
    if total <= 0:
        return f"order total is {total}: nothing to charge"
    if total > max_total:
        return f"order total {total} is over the limit of {_money(max_total)}"
    return None


def _money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT)


@dataclass(eq=False)
class Order(AggregateRoot):
    id: str
    customer_id: str | None  # None only for a refused order whose data named no valid customer
    lines: tuple[OrderLine, ...]
    currency: str
    status: OrderStatus = OrderStatus.PENDING
    reason: str | None = None
    refused: bool = False
    aggregate_type = "order"

    @property
    def aggregate_id(self) -> str:
        return self.id

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00")).quantize(Decimal("0.01"))

    @classmethod
    def place(
        cls,
        command: PlaceOrder,
        *,
        order_id: str,
        catalog: Mapping[str, Decimal],
        max_total: Decimal,
    ) -> Order:
        """A new PENDING order at the catalog's prices (``OrderCreated``), or, when a rule of
        :func:`refusal` is broken, a refused one (``OrderRejected``)."""
        reason = refusal(command, catalog=catalog, max_total=max_total)
        if reason is not None:
            return cls.refuse(
                order_id=order_id,
                customer_id=command.customer_id,
                currency=command.currency,
                reason=reason,
            )
        order = cls(
            id=order_id,
            customer_id=command.customer_id,
            lines=tuple(OrderLine(i.sku, i.quantity, catalog[i.sku]) for i in command.items),
            currency=command.currency,
        )
        order.record(
            OrderCreated(
                order_id=order.id,
                customer_id=command.customer_id,
                items=tuple(
                    PricedLine(sku=line.sku, quantity=line.quantity, unit_price=line.unit_price)
                    for line in order.lines
                ),
                total=order.total,
                currency=command.currency,
            )
        )
        return order

    @classmethod
    def refuse(cls, *, order_id: str, customer_id: str | None, currency: str, reason: str) -> Order:
        """An order refused up front: REJECTED, no lines, total 0, answered ``OrderRejected``."""
        order = cls(
            id=order_id,
            customer_id=customer_id,
            lines=(),
            currency=currency,
            status=OrderStatus.REJECTED,
            reason=limit_reason(reason),
            refused=True,
        )
        order.restate_refusal()
        return order

    def restate_refusal(self) -> None:
        """Answer a refused order's PlaceOrder again, the same way (a client's retry)."""
        if not self.refused:
            raise InvalidMessageData(f"order {self.id} was not refused")
        self.record(OrderRejected(order_id=self.id, reason=self.reason or "refused"))

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
