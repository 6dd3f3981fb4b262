"""The catalog: the unit prices order_svc charges. `orderflow catalog list` and `set-price`.

The catalog lives in order_svc's database (migration ``order/0002_catalog``); `orderflow setup`
seeds the demo prices without ever overwriting a price already there. A price change applies to
orders placed after it; an order already placed keeps the prices it was created with.
The operator tools connect as the service's runtime role (``Settings.dsn_for("order_svc")``),
which may read and write rows, never change the schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from asyncpg import Record
from pydantic import TypeAdapter, ValidationError

from contracts.types import Sku
from libs.errors import OrderflowError
from libs.pg import Conn, connection
from libs.settings import Settings

_SKU: TypeAdapter[str] = TypeAdapter(Sku)  # the contract's SKU
MAX_PRICE = Decimal("1000000000")  # what the contract's Money accepts
CENT = Decimal("0.01")


class CatalogError(OrderflowError):
    """An operator's catalog change that cannot be made; the text says why."""


@dataclass(frozen=True)
class CatalogItem:
    sku: str
    name: str
    price: Decimal
    updated_at: datetime


@dataclass(frozen=True)
class PriceChange:
    item: CatalogItem
    previous: Decimal | None  # None: the SKU was added

    def describe(self) -> str:
        if self.previous is None:
            return f"added {self.item.sku} ({self.item.name}) at {self.item.price}"
        if self.previous == self.item.price:
            return f"{self.item.sku} ({self.item.name}) stays at {self.item.price}"
        return f"{self.item.sku} ({self.item.name}): {self.previous} → {self.item.price}"


def parse_sku(text: str) -> str:
    sku = text.strip().upper()
    try:
        return _SKU.validate_python(sku, strict=True)
    except ValidationError:
        raise CatalogError(
            f"{text!r} is not a SKU: 1 to 32 of A-Z, 0-9, - and _, starting with a letter or digit"
        ) from None


def parse_price(text: str | Decimal) -> Decimal:
    """A price above zero with at most two decimals, e.g. ``9.99``."""
    try:
        price = Decimal(text.strip() if isinstance(text, str) else text)
    except InvalidOperation:
        raise CatalogError(f"{text!r} is not a price like 9.99") from None
    if not price.is_finite() or price <= 0 or price > MAX_PRICE:
        raise CatalogError(f"{text!r}: a price is above zero and at most {MAX_PRICE}")
    if price != price.quantize(CENT):
        raise CatalogError(f"{text!r}: a price has at most two decimals")
    return price.quantize(CENT)


_COLUMNS = "sku, name, price, updated_at"


def _item(row: Record) -> CatalogItem:
    return CatalogItem(
        sku=row["sku"], name=row["name"], price=Decimal(row["price"]), updated_at=row["updated_at"]
    )


async def items(conn: Conn) -> list[CatalogItem]:
    return [_item(r) for r in await conn.fetch(f"SELECT {_COLUMNS} FROM catalog ORDER BY sku")]


async def change_price(conn: Conn, sku: str, price: Decimal, *, name: str | None) -> PriceChange:
    """Set a SKU's price (and name, when given); a SKU not in the catalog is added only when
    named. Orders placed from the commit on are charged the new price."""
    async with conn.transaction():
        previous = await conn.fetchval("SELECT price FROM catalog WHERE sku = $1 FOR UPDATE", sku)
        if previous is None:
            if name is None:
                raise CatalogError(
                    f"no SKU {sku} in the catalog; add it with a name: "
                    f'`orderflow catalog set-price {sku} {price} --name "{sku.title()}"`'
                )
            row = await conn.fetchrow(
                f"""INSERT INTO catalog (sku, name, price) VALUES ($1, $2, $3)
                    ON CONFLICT (sku) DO UPDATE
                       SET name = EXCLUDED.name, price = EXCLUDED.price,
                           updated_at = clock_timestamp()
                    RETURNING {_COLUMNS}""",
                sku,
                name,
                price,
            )
        else:
            row = await conn.fetchrow(
                f"""UPDATE catalog SET price = $2, name = coalesce($3, name),
                           updated_at = clock_timestamp()
                     WHERE sku = $1 RETURNING {_COLUMNS}""",
                sku,
                price,
                name,
            )
    assert row is not None
    return PriceChange(_item(row), None if previous is None else Decimal(previous))


async def seed(conn: Conn, rows: Iterable[tuple[str, str, Decimal]]) -> None:
    """Add (sku, name, price) rows that are not in the catalog; never changes a price."""
    await conn.executemany(
        "INSERT INTO catalog (sku, name, price) VALUES ($1, $2, $3) ON CONFLICT (sku) DO NOTHING",
        list(rows),
    )


async def list_items(settings: Settings) -> list[CatalogItem]:
    """Every SKU with its price, by SKU."""
    async with connection(settings.dsn_for("order_svc"), application_name="orderflow-cli") as conn:
        return await items(conn)


async def set_price(
    settings: Settings, sku: str, price: str | Decimal, *, name: str | None = None
) -> PriceChange:
    """What `orderflow catalog set-price SKU PRICE [--name NAME]` does."""
    sku, amount = parse_sku(sku), parse_price(price)
    if name is not None:
        name = name.strip()
        if not 0 < len(name) <= 200:
            raise CatalogError("--name: 1 to 200 characters")
    async with connection(settings.dsn_for("order_svc"), application_name="orderflow-cli") as conn:
        return await change_price(conn, sku, amount, name=name)
