"""Orders and the catalog in PostgreSQL. Runs on the handler's connection, inside its transaction."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

from libs.pg import Conn
from order_svc.domain.model import Order, OrderLine, OrderStatus


async def prices(conn: Conn, skus: Collection[str]) -> dict[str, Decimal]:
    """The catalog's unit price of each of ``skus`` that is in the catalog."""
    rows = await conn.fetch(
        "SELECT sku, price FROM catalog WHERE sku = ANY($1::text[])", list(skus)
    )
    return {r["sku"]: Decimal(r["price"]) for r in rows}


async def get(conn: Conn, order_id: str, *, for_update: bool = True) -> Order | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        "SELECT id::text, customer_id, status, currency, reason, refused FROM orders"
        f" WHERE id = $1{lock}",
        order_id,
    )
    if row is None:
        return None
    lines = await conn.fetch(
        "SELECT sku, quantity, unit_price FROM order_lines WHERE order_id = $1 ORDER BY line_no",
        order_id,
    )
    return Order(
        id=row["id"],
        customer_id=row["customer_id"],
        lines=tuple(OrderLine(r["sku"], r["quantity"], Decimal(r["unit_price"])) for r in lines),
        currency=row["currency"],
        status=OrderStatus(row["status"]),
        reason=row["reason"],
        refused=row["refused"],
    )


async def add(conn: Conn, order: Order, *, placed_by: str) -> bool:
    """Insert a new order (placed or refused); False when an order with this id exists already."""
    created = await conn.fetchval(
        """INSERT INTO orders (id, customer_id, status, total, currency, reason, refused, placed_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING true""",
        order.id,
        order.customer_id,
        order.status.value,
        order.total,
        order.currency,
        order.reason,
        order.refused,
        placed_by,
    )
    if not created:
        return False
    if order.lines:
        await conn.executemany(
            "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price) VALUES ($1, $2, $3, $4, $5)",
            [
                (order.id, n, line.sku, line.quantity, line.unit_price)
                for n, line in enumerate(order.lines)
            ],
        )
    return True


async def save_status(conn: Conn, order: Order) -> None:
    await conn.execute(
        "UPDATE orders SET status = $2, reason = $3, updated_at = clock_timestamp() WHERE id = $1",
        order.id,
        order.status.value,
        order.reason,
    )
