"""Stock and reservations in PostgreSQL, on the handler's transaction.

Stock rows are locked in SKU order, so two reservations that share SKUs cannot deadlock.
``CHECK (on_hand >= 0)`` makes negative stock impossible even for a buggy caller.
"""

from __future__ import annotations

from collections.abc import Iterable

from inventory_svc.domain.model import Reservation, ReservationStatus, Stock
from libs.pg.pool import Conn


async def get_reservation(conn: Conn, order_id: str) -> Reservation | None:
    row = await conn.fetchrow(
        "SELECT status, reason FROM reservations WHERE order_id = $1 FOR UPDATE", order_id
    )
    if row is None:
        return None
    lines = await conn.fetch(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku", order_id
    )
    return Reservation(
        order_id=order_id,
        lines=tuple((r["sku"], r["quantity"]) for r in lines),
        status=ReservationStatus(row["status"]),
        reason=row["reason"],
    )


async def lock_stock(conn: Conn, skus: Iterable[str]) -> dict[str, Stock]:
    rows = await conn.fetch(
        "SELECT sku, on_hand FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE",
        sorted(set(skus)),
    )
    return {r["sku"]: Stock(r["sku"], r["on_hand"]) for r in rows}


async def save(
    conn: Conn, reservation: Reservation, *, stock: dict[str, Stock], is_new: bool
) -> None:
    await conn.execute(
        """INSERT INTO reservations (order_id, status, reason) VALUES ($1, $2, $3)
           ON CONFLICT (order_id) DO UPDATE
              SET status = EXCLUDED.status, reason = EXCLUDED.reason, updated_at = clock_timestamp()""",
        reservation.order_id,
        reservation.status.value,
        reservation.reason,
    )
    if is_new and reservation.lines:
        await conn.executemany(
            "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)",
            [(reservation.order_id, sku, qty) for sku, qty in reservation.lines],
        )
    if stock:
        await conn.executemany(
            "UPDATE stock SET on_hand = $2 WHERE sku = $1 AND on_hand <> $2",
            [(s.sku, s.on_hand) for s in stock.values()],
        )
