"""What operators may read from (and seed into) payment_svc's database: the only place outside
payment_svc that knows its tables' columns."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from libs.pg import Conn, tables

__all__ = ["check_tables", "seed_customers"]


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
