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

A batch (several commands in one transaction) is locked and loaded at once by
:func:`load_batch`: every order's lock in one round trip (``KeyLock.take_all``: none waited for,
one busy order sends the batch back to one message per transaction), then every reservation
with its lines and every stock row the commands will move in one statement, stock locked in SKU
order as always. Handlers read from the :class:`Batch` (:func:`lock_and_load`,
:func:`lock_stock`) and :func:`save` writes the decided reservation back into it; the stock rows
are shared objects the domain moves in place, so a later command of the batch sees what an
earlier one did, as it would see it committed.

``save`` is conditional as a second guard: an existing reservation changes only ``RESERVED →
RELEASED`` (or is rewritten with its own status); anything else raises before lines or stock
are written. ``CHECK (on_hand >= 0)`` makes negative stock impossible even for a buggy caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(slots=True)
class Batch:
    """One transaction's orders, locked, with their reservations (``None``: none yet) and the
    stock rows its commands move, as loaded by :func:`load_batch` and updated by :func:`save`
    and the domain; ``looked_up``: every SKU the load asked for, found or not."""

    reservations: dict[str, Reservation | None] = field(default_factory=dict)
    stock: dict[str, Stock] = field(default_factory=dict)
    looked_up: set[str] = field(default_factory=set)


BATCH = "inventory_svc.batch"
"""Where a transaction's :class:`Batch` is kept in the handlers' shared dict."""


async def load_batch(
    conn: Conn,
    shared: dict[str, Any],
    order_ids: Sequence[str],
    reserving: Sequence[tuple[str, str]],
    releasing: Sequence[str],
) -> None:
    """Lock every order of ``order_ids`` (first, before anything is read), then load their
    reservations with lines and lock the stock rows the commands will move — the SKUs of
    ``reserving`` ((order id, SKU) of each reservation asked for) whose order has no reservation
    yet, and the lines of the reservations of ``releasing`` that hold stock — into ``shared``:
    two round trips for the whole batch. (A reservation and its release in one batch lock the
    reservation's SKUs, as the reservation alone would.)"""
    await ORDER_LOCK.take_all(conn, order_ids)
    rows = await conn.fetch(
        """WITH r AS (
               SELECT order_id, status, reason FROM reservations
                WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE),
           l AS (
               SELECT order_id, sku, quantity FROM reservation_lines
                WHERE order_id = ANY($1::uuid[])),
           wanted AS (
               SELECT n.sku FROM unnest($2::uuid[], $3::text[]) AS n(order_id, sku)
                WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.order_id = n.order_id)
               UNION
               SELECT l.sku FROM l JOIN r USING (order_id)
                WHERE r.status = 'RESERVED' AND r.order_id = ANY($4::uuid[])),
           s AS (
               SELECT sku, on_hand FROM stock WHERE sku IN (SELECT sku FROM wanted)
                ORDER BY sku FOR UPDATE)
           SELECT 'r' AS kind, order_id::text, status, reason, NULL AS sku, NULL::int AS n FROM r
           UNION ALL
           SELECT 'l', order_id::text, NULL, NULL, sku, quantity FROM l
           UNION ALL
           SELECT 'w', NULL, NULL, NULL, sku, NULL FROM wanted
           UNION ALL
           SELECT 's', NULL, NULL, NULL, sku, on_hand FROM s
           ORDER BY 1, 2, 5""",
        sorted(set(order_ids)),
        [order_id for order_id, _ in reserving],
        [sku for _, sku in reserving],
        sorted(set(releasing)),
    )
    batch = Batch(reservations=dict.fromkeys(order_ids))
    lines: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        kind = row["kind"]
        if kind == "r":
            batch.reservations[row["order_id"]] = Reservation(
                order_id=row["order_id"],
                lines=(),
                status=ReservationStatus(row["status"]),
                reason=row["reason"],
            )
        elif kind == "l":
            lines.setdefault(row["order_id"], []).append((row["sku"], row["n"]))
        elif kind == "w":
            batch.looked_up.add(row["sku"])
        else:
            batch.stock[row["sku"]] = Stock(row["sku"], row["n"])
    for order_id, reservation in batch.reservations.items():
        if reservation is not None:
            reservation.lines = tuple(lines.get(order_id, ()))
    shared[BATCH] = batch


async def lock_and_load(conn: Conn, shared: dict[str, Any], order_id: str) -> Reservation | None:
    """The order's reservation: from the transaction's :class:`Batch` when :func:`load_batch`
    loaded this order, else locked (:func:`lock_order`, first) and loaded now."""
    batch: Batch | None = shared.get(BATCH)
    if batch is None or order_id not in batch.reservations:
        await lock_order(conn, order_id)
        return await get_reservation(conn, order_id)
    return batch.reservations[order_id]


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


async def lock_stock(
    conn: Conn, skus: Iterable[str], *, shared: dict[str, Any] | None = None
) -> dict[str, Stock]:
    """The stock rows of ``skus`` that exist, row-locked: those the transaction's
    :class:`Batch` (in ``shared``) looked up from it, any other locked and read now."""
    wanted = set(skus)
    batch: Batch | None = (shared or {}).get(BATCH)
    found: dict[str, Stock] = {}
    if batch is not None:
        found = {sku: batch.stock[sku] for sku in wanted & batch.looked_up if sku in batch.stock}
        wanted -= batch.looked_up
    if wanted:
        rows = await conn.fetch(
            "SELECT sku, on_hand FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE",
            sorted(wanted),
        )
        fresh = {r["sku"]: Stock(r["sku"], r["on_hand"]) for r in rows}
        if batch is not None:  # what a later command of the batch moves is these same rows
            batch.stock.update(fresh)
            batch.looked_up |= wanted
        found.update(fresh)
    return found


async def save(
    conn: Conn,
    reservation: Reservation,
    *,
    stock: dict[str, Stock],
    is_new: bool,
    shared: dict[str, Any] | None = None,
) -> None:
    """Write the reservation, its lines (when new) and the stock it moved, in one statement;
    once written, the reservation is also the one the transaction's :class:`Batch` (in
    ``shared``) holds for its order.

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
    batch: Batch | None = (shared or {}).get(BATCH)
    if batch is not None and reservation.order_id in batch.reservations:
        batch.reservations[reservation.order_id] = reservation
