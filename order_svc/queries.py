"""What operators may read from order_svc's database (the CLI, `orderflow check`, the chaos
harness): the only place outside order_svc that knows its tables' columns."""

from __future__ import annotations

from typing import Any

from libs.pg import Conn, Cursor, page_of, tables

__all__ = [
    "check_tables",
    "count_by_status",
    "existing",
    "list_orders",
    "order_detail",
    "page_orders",
    "refused_among",
    "statuses",
]

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


async def page_orders(
    conn: Conn,
    *,
    status: str | None = None,
    customer: str | None = None,
    older_than: float | None = None,
    after: Cursor | None = None,
    limit: int = 50,
) -> tuple[Rows, Cursor | None]:
    """One page of orders, newest first, and the cursor of the next page (None: the last)."""
    rows = await conn.fetch(
        """SELECT id::text, customer_id, status, total, currency, reason, created_at, updated_at
             FROM orders
            WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR customer_id = $2)
              AND ($3::float8 IS NULL
                   OR created_at < clock_timestamp() - make_interval(secs => $3))
              AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
            ORDER BY created_at DESC, id DESC LIMIT $6""",
        status,
        customer,
        older_than,
        after.created_at if after else None,
        after.id if after else None,
        limit + 1,
    )
    return page_of([dict(r) for r in rows], limit, lambda r: (r["created_at"], r["id"]))


async def order_detail(conn: Conn, order_id: str) -> dict[str, Any] | None:
    """One order with its lines, or None."""
    row = await conn.fetchrow(
        """SELECT id::text, customer_id, status, total, currency, reason, created_at, updated_at
             FROM orders WHERE id = $1::uuid""",
        order_id,
    )
    if row is None:
        return None
    lines = await conn.fetch(
        """SELECT sku, quantity, unit_price FROM order_lines
            WHERE order_id = $1::uuid ORDER BY line_no""",
        order_id,
    )
    return {**dict(row), "lines": [dict(r) for r in lines]}


async def count_by_status(conn: Conn) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM orders GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
