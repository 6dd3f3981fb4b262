"""What operators may read from (and seed into) inventory_svc's database: the only place outside
inventory_svc that knows its tables' columns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from libs.pg import Conn, tables

__all__ = ["check_tables", "reservation_of", "seed_stock"]


async def check_tables(conn: Conn, **_: Any) -> dict[str, list[dict[str, Any]]]:
    """Stock, reservations and their lines, for the invariants."""
    queries = {
        "stock": "SELECT sku, on_hand, opening_on_hand FROM stock",
        "reservations": "SELECT order_id::text, status, created_at, updated_at FROM reservations",
        "reservation_lines": "SELECT order_id::text, sku, quantity FROM reservation_lines",
    }
    return await tables(conn, queries)


async def seed_stock(conn: Conn, stock: Iterable[tuple[str, str, int]]) -> None:
    """(sku, name, on hand) stock; a SKU already there is left as it is."""
    await conn.executemany(
        """INSERT INTO stock (sku, name, on_hand, opening_on_hand) VALUES ($1, $2, $3, $3)
           ON CONFLICT (sku) DO NOTHING""",
        list(stock),
    )


async def reservation_of(conn: Conn, order_id: str) -> dict[str, Any] | None:
    """An order's reservation and its lines, or None when it was never asked for."""
    row = await conn.fetchrow(
        """SELECT status, reason, created_at, updated_at FROM reservations
            WHERE order_id = $1::uuid""",
        order_id,
    )
    if row is None:
        return None
    lines = await conn.fetch(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1::uuid ORDER BY sku",
        order_id,
    )
    return {**dict(row), "lines": [dict(r) for r in lines]}
