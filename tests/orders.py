"""Orders as tests write them: an OrderCreated of one line of WIDGETs for alice."""

from __future__ import annotations

import uuid
from decimal import Decimal

from contracts.order import OrderCreated
from contracts.types import PricedLine


def order_created(
    order_id: str | None = None, *, quantity: int = 1, price: str = "5.00"
) -> OrderCreated:
    unit = Decimal(price)
    return OrderCreated(
        order_id=order_id or str(uuid.uuid4()),
        customer_id="alice",
        items=(PricedLine(sku="WIDGET", quantity=quantity, unit_price=unit),),
        total=unit * quantity,
        currency="USD",
    )
