"""Field types shared by the contracts, with the limits every consumer enforces."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_LINES = 100
MAX_QUANTITY = 10_000

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")]
OrderId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
Sku = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Z0-9][A-Z0-9_-]*$")
]
Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY, strict=True)]
Money = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("1000000000"), max_digits=14, decimal_places=2, allow_inf_nan=False),
]
Currency = Literal["USD"]
Reason = Annotated[str, StringConstraints(max_length=500)]


class QuotedLine(BaseModel):
    """A line as a client orders it; ``unit_price`` (optional) must equal the catalog's price."""

    # unit_price is the price the client was shown; the catalog's price is what is charged.

    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: Sku
    quantity: Quantity
    unit_price: Money | None = None


class PricedLine(QuotedLine):
    """A line at the unit price charged: the catalog's when the order was placed."""

    unit_price: Money


class Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: Sku
    quantity: Quantity
