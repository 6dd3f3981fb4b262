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
    """The order with its lines (row-locked unless ``for_update=False``): one round trip."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        "SELECT id::text, customer_id, status, currency, reason, refused,"
        " ARRAY(SELECT sku FROM order_lines WHERE order_id = $1 ORDER BY line_no) AS skus,"
        " ARRAY(SELECT quantity FROM order_lines WHERE order_id = $1 ORDER BY line_no) AS qtys,"
        " ARRAY(SELECT unit_price FROM order_lines WHERE order_id = $1 ORDER BY line_no) AS prices"
        f" FROM orders WHERE id = $1{lock}",
        order_id,
    )
    if row is None:
        return None
    lines = zip(row["skus"], row["qtys"], row["prices"], strict=True)
    return Order(
        id=row["id"],
        customer_id=row["customer_id"],
        lines=tuple(OrderLine(sku, qty, Decimal(price)) for sku, qty, price in lines),
        currency=row["currency"],
        status=OrderStatus(row["status"]),
        reason=row["reason"],
        refused=row["refused"],
    )


async def add(conn: Conn, order: Order, *, placed_by: str) -> bool:
    """Insert a new order (placed or refused) with its lines, in one statement; False when an
    order with this id exists already (nothing is written then)."""
    created = await conn.fetchval(
        """WITH o AS (
               INSERT INTO orders (id, customer_id, status, total, currency, reason, refused,
                                   placed_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING
               RETURNING id),
           l AS (
               INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price)
               SELECT o.id, n.line_no - 1, n.sku, n.quantity, n.unit_price
                 FROM o, unnest($9::text[], $10::int[], $11::numeric[])
                      WITH ORDINALITY AS n(sku, quantity, unit_price, line_no))
           SELECT count(*) FROM o""",
        order.id,
        order.customer_id,
        order.status.value,
        order.total,
        order.currency,
        order.reason,
        order.refused,
        placed_by,
        [line.sku for line in order.lines],
        [line.quantity for line in order.lines],
        [line.unit_price for line in order.lines],
    )
    return bool(created)


async def save_status(conn: Conn, order: Order) -> None:
    await conn.execute(
        "UPDATE orders SET status = $2, reason = $3, updated_at = clock_timestamp() WHERE id = $1",
        order.id,
        order.status.value,
        order.reason,
    )
