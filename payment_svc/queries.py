"""What operators may read from (and seed into) payment_svc's database: the only place outside
payment_svc that knows its tables' columns."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from libs.pg import Conn, tables

__all__ = ["check_tables", "payment_of", "seed_customers"]


async def check_tables(conn: Conn, **_: Any) -> dict[str, list[dict[str, Any]]]:
    """Customers, the ledger and payments, for the invariants."""
    queries = {
        "customers": "SELECT id, balance, opening_balance FROM customers",
        "ledger": "SELECT order_id::text, customer_id, kind, amount FROM ledger",
        "payments": "SELECT order_id::text, amount, status, created_at, updated_at FROM payments",
    }
    return await tables(conn, queries)


async def seed_customers(conn: Conn, customers: Iterable[tuple[str, str, Decimal]]) -> None:
    """(id, name, balance) customers; one already there is left as it is."""
    await conn.executemany(
        """INSERT INTO customers (id, name, balance, opening_balance) VALUES ($1, $2, $3, $3)
           ON CONFLICT (id) DO NOTHING""",
        list(customers),
    )


async def payment_of(conn: Conn, order_id: str) -> dict[str, Any] | None:
    """An order's payment and its ledger entries, or None when it was never asked for."""
    row = await conn.fetchrow(
        """SELECT customer_id, amount, status, reason, created_at, updated_at
             FROM payments WHERE order_id = $1::uuid""",
        order_id,
    )
    ledger = await conn.fetch(
        "SELECT kind, amount, at FROM ledger WHERE order_id = $1::uuid ORDER BY id", order_id
    )
    if row is None and not ledger:
        return None
    return {**(dict(row) if row else {}), "ledger": [dict(r) for r in ledger]}
