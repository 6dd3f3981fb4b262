"""What operators may read from order_svc's database (the CLI, `orderflow check`, the chaos
harness): the only place outside order_svc that knows its tables' columns."""

from __future__ import annotations

from typing import Any

from libs.pg import Conn, tables

__all__ = ["check_tables", "existing", "list_orders", "refused_among", "statuses"]

Rows = list[dict[str, Any]]


async def check_tables(conn: Conn, **_: Any) -> dict[str, Rows]:
    """Every order and order line, for the invariants."""
    return await tables(
        conn,
        {
            "orders": "SELECT id::text, customer_id, status, total, refused, updated_at FROM orders",
            "lines": "SELECT order_id::text, sku, quantity, unit_price FROM order_lines",
        },
    )


async def list_orders(conn: Conn, *, status: str | None, limit: int) -> Rows:
    """The newest orders first, of one status or all."""
    rows = await conn.fetch(
        """SELECT id::text, customer_id, status, total, currency, reason,
                  extract(epoch FROM clock_timestamp() - created_at) AS age
             FROM orders WHERE ($1::text IS NULL OR status = $1)
            ORDER BY created_at DESC LIMIT $2""",
        status,
        limit,
    )
    return [dict(r) for r in rows]


async def existing(conn: Conn, order_ids: list[str]) -> set[str]:
    """Which of these orders order_svc knows."""
    rows = await conn.fetch(
        "SELECT id::text FROM orders WHERE id::text = ANY($1::text[])", order_ids
    )
    return {r["id"] for r in rows}


async def refused_among(conn: Conn, order_ids: list[str]) -> set[str]:
    """Which of these orders are stored refused (answered with OrderRejected, no saga)."""
    rows = await conn.fetch(
        "SELECT id::text FROM orders WHERE id = ANY($1::uuid[]) AND refused", order_ids
    )
    return {r["id"] for r in rows}


async def statuses(conn: Conn, order_ids: list[str]) -> dict[str, str]:
    """The status of each of these orders that exists."""
    rows = await conn.fetch(
        "SELECT id::text, status FROM orders WHERE id::text = ANY($1::text[])", order_ids
    )
    return {r["id"]: r["status"] for r in rows}
