"""Stock and reservations in PostgreSQL, on the handler's transaction.

Per-order serialisation (issue #12). ``SELECT ... FOR UPDATE`` on ``reservations`` locks nothing
while the order has no row yet, so a ReleaseInventory racing the first ReserveInventory of its
order used to see no reservation, decide on a tombstone, and overwrite the RESERVED row with
CANCELLED once the reservation committed (stock taken, never given back). Every handler therefore
calls :func:`lock_order` first: a transaction-scoped advisory lock on the order, taken before
anything is read, so the handlers of one order run one after the other and each sees what the
previous one committed (READ COMMITTED: a fresh snapshot per statement).

Why an advisory lock, its key, and why no two of them deadlock: ``libs.pg.locks``. Stock rows
are then locked blocking, in SKU order, so two transactions of one message each cannot deadlock
on them; only two batches that share SKUs
across orders in opposite orders can, which PostgreSQL detects (40P01, retried as a conflict) —
failing fast on hot SKUs would make most batches fall back.

``save`` is conditional as a second guard: an existing reservation changes only ``RESERVED →
RELEASED`` (or is rewritten with its own status); anything else raises before lines or stock
are written. ``CHECK (on_hand >= 0)`` makes negative stock impossible even for a buggy caller.
"""

from __future__ import annotations

from collections.abc import Iterable

from inventory_svc.domain.model import Reservation, ReservationStatus, Stock
from libs.errors import StateOverwriteRefused
from libs.pg import Conn, KeyLock

ORDER_LOCK = KeyLock(b"RSRV", "order")
"""This table's per-order transaction lock (see ``libs.pg.locks``)."""


class ReservationOverwriteRefused(StateOverwriteRefused):
    """``save`` refused a status change the reservation rules do not allow."""


async def lock_order(conn: Conn, order_id: str) -> None:
    """Take this order's transaction lock first, before reading anything (``libs.pg.locks``)."""
    await ORDER_LOCK.take(conn, order_id)


async def get_reservation(conn: Conn, order_id: str) -> Reservation | None:
    """The order's reservation, row-locked, with its lines: one round trip."""
    row = await conn.fetchrow(
        """SELECT status, reason,
                  ARRAY(SELECT sku FROM reservation_lines WHERE order_id = $1 ORDER BY sku) AS skus,
                  ARRAY(SELECT quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku)
                      AS quantities
             FROM reservations WHERE order_id = $1 FOR UPDATE""",
        order_id,
    )
    if row is None:
        return None
    return Reservation(
        order_id=order_id,
        lines=tuple(zip(row["skus"], row["quantities"], strict=True)),
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
    """Write the reservation, its lines (when new) and the stock it moved, in one statement.

    Conditional: an existing reservation changes only ``RESERVED → RELEASED`` (or is rewritten
    with its own status); any other change writes nothing (lines and stock included) and raises
    :class:`ReservationOverwriteRefused`.
    """
    lines = reservation.lines if is_new else ()
    moved = list(stock.values())
    written = await conn.fetchval(
        """WITH r AS (
               INSERT INTO reservations (order_id, status, reason) VALUES ($1, $2, $3)
               ON CONFLICT (order_id) DO UPDATE
                  SET status = EXCLUDED.status, reason = EXCLUDED.reason,
                      updated_at = clock_timestamp()
                WHERE reservations.status = EXCLUDED.status
                   OR (reservations.status = 'RESERVED' AND EXCLUDED.status = 'RELEASED')
               RETURNING 1),
           l AS (
               INSERT INTO reservation_lines (order_id, sku, quantity)
               SELECT $1, n.sku, n.quantity FROM unnest($4::text[], $5::int[]) AS n(sku, quantity)
                WHERE EXISTS (SELECT 1 FROM r)),
           s AS (
               UPDATE stock SET on_hand = n.on_hand
                 FROM unnest($6::text[], $7::int[]) AS n(sku, on_hand)
                WHERE stock.sku = n.sku AND stock.on_hand <> n.on_hand
                  AND EXISTS (SELECT 1 FROM r))
           SELECT count(*) FROM r""",
        reservation.order_id,
        reservation.status.value,
        reservation.reason,
        [sku for sku, _ in lines],
        [qty for _, qty in lines],
        [s.sku for s in moved],
        [s.on_hand for s in moved],
    )
    if not written:
        raise ReservationOverwriteRefused(
            f"reservation {reservation.order_id}: refusing to write "
            f"{reservation.status.value} over the stored status"
        )
