"""The order context: placing, approving and rejecting orders."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contracts.types import (
    MAX_LINES,
    Currency,
    Id,
    Money,
    OrderId,
    PricedLine,
    QuotedLine,
    Reason,
)
from libs.messages.registry import Command, Event

QuotedLines = Annotated[tuple[QuotedLine, ...], Field(min_length=1, max_length=MAX_LINES)]
Lines = Annotated[tuple[PricedLine, ...], Field(min_length=1, max_length=MAX_LINES)]


class PlaceOrder(Command):
    """Any AMQP client may send this; ``order_id`` chosen by the client makes it idempotent."""

    # The catalog's prices are charged; a line's unit_price, when given, must equal the
    # catalog's or the order is refused (OrderRejected). A PricedLine is a QuotedLine too.

    TYPE = "order.place_order.v1"
    order_id: OrderId | None = None
    customer_id: Id
    items: QuotedLines
    currency: Currency = "USD"


class ApproveOrder(Command):
    TYPE = "order.approve_order.v1"
    order_id: OrderId


class RejectOrder(Command):
    TYPE = "order.reject_order.v1"
    order_id: OrderId
    reason: Reason


class OrderCreated(Event):
    """A PENDING order, its lines at the catalog's unit prices; starts the order saga."""

    TYPE = "order.order_created.v1"
    order_id: OrderId
    customer_id: Id
    items: Lines
    total: Money
    currency: Currency


class OrderConfirmed(Event):
    TYPE = "order.order_confirmed.v1"
    order_id: OrderId
    total: Money


class OrderRejected(Event):
    TYPE = "order.order_rejected.v1"
    order_id: OrderId
    reason: Reason


MESSAGES = (PlaceOrder, ApproveOrder, RejectOrder, OrderCreated, OrderConfirmed, OrderRejected)
