"""Stock and reservations in PostgreSQL, on the handler's transaction.

Per-order serialisation (issue #12). ``SELECT ... FOR UPDATE`` on ``reservations`` locks nothing
while the order has no row yet, so a ReleaseInventory racing the first ReserveInventory of its
order used to see no reservation, decide on a tombstone, and overwrite the RESERVED row with
CANCELLED once the reservation committed (stock taken, never given back). Every handler therefore
calls :func:`lock_order` first: a transaction-scoped advisory lock on the order, taken before
anything is read, so the handlers of one order run one after the other and each sees what the
previous one committed (READ COMMITTED: a fresh snapshot per statement).

Why an advisory lock and not create-or-lock (a placeholder row, then ``FOR UPDATE``): no
placeholder state in the schema that readers and the checker would have to skip, same cost.

The key: ``pg_advisory_xact_lock(ORDER_LOCK_CLASS, key)``, the two-int form, with a class id of
its own for this table ("RSRV") and ``key`` a stable 32-bit hash (BLAKE2b) of the order's uuid
bytes. The two-int key space is disjoint from the single-bigint one that the outbox relay's
leader lock and the migrations lock use, so they never collide; two orders whose keys collide
(1 in 2**32) merely wait for each other.

Deadlocks. A handler may run inside a batch transaction that handles many messages, so one
transaction may take several order locks, in message order; two batches taking them in opposite
orders could deadlock. :func:`lock_order` therefore *waits* only when the transaction holds no
other order lock; holding some, a busy order raises :class:`~libs.errors.ConcurrencyConflict` at
once: the batch rolls back and the runner handles its messages one per transaction, where
waiting is safe. Contention on one order is rare (a duplicate, a reservation racing its
release), so the fallback costs little. Stock rows are then locked blocking, in SKU order, so two
transactions of one message each cannot deadlock on them; only two batches that share SKUs
across orders in opposite orders can, which PostgreSQL detects (40P01, retried as a conflict) —
failing fast on hot SKUs would make most batches fall back.

``save`` is conditional as a second guard: an existing reservation changes only ``RESERVED →
RELEASED`` (or is rewritten with its own status); anything else raises before lines or stock
are written. ``CHECK (on_hand >= 0)`` makes negative stock impossible even for a buggy caller.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

from inventory_svc.domain.model import Reservation, ReservationStatus, Stock
from libs.errors import ConcurrencyConflict
from libs.pg.pool import Conn

ORDER_LOCK_CLASS = int.from_bytes(b"RSRV", "big")
"""The advisory lock class of reservations' per-order locks (two-int form)."""


class ReservationOverwriteRefused(ConcurrencyConflict):
    """``save`` refused a status change the reservation rules do not allow (retried by the
    runner: the retry re-reads the reservation under the order lock)."""


def order_lock_key(order_id: str) -> int:
    """A stable signed 32-bit key for ``order_id``: the same for every spelling of the uuid, on
    every process and version (a BLAKE2b digest, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(uuid.UUID(order_id).bytes, digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_order(conn: Conn, order_id: str) -> None:
    """Take this order's transaction lock (inside a transaction; released at commit/rollback).

    Waits for it only if this transaction holds no other order lock; otherwise a busy lock raises
    :class:`ConcurrencyConflict` instead of waiting (see the module docstring: no deadlock).
    """
    key = order_lock_key(order_id)
    if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", ORDER_LOCK_CLASS, key):
        return
    holds_others = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_locks
                           WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                             AND classid = $1::oid AND objsubid = 2)""",
        ORDER_LOCK_CLASS,
    )
    if holds_others:
        raise ConcurrencyConflict(
            f"order {order_id} is locked by another transaction and this one holds other "
            "orders' locks: not waiting (no lock-order deadlock); retried one message at a time"
        )
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", ORDER_LOCK_CLASS, key)


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
    """Write the reservation, its lines (when new) and the stock it moved.

    Conditional: an existing reservation changes only ``RESERVED → RELEASED`` (or is rewritten
    with its own status); any other change raises :class:`ReservationOverwriteRefused` before
    lines or stock are touched.
    """
    written = await conn.fetchval(
        """INSERT INTO reservations (order_id, status, reason) VALUES ($1, $2, $3)
           ON CONFLICT (order_id) DO UPDATE
              SET status = EXCLUDED.status, reason = EXCLUDED.reason, updated_at = clock_timestamp()
            WHERE reservations.status = EXCLUDED.status
               OR (reservations.status = 'RESERVED' AND EXCLUDED.status = 'RELEASED')
           RETURNING 1""",
        reservation.order_id,
        reservation.status.value,
        reservation.reason,
    )
    if written is None:
        raise ReservationOverwriteRefused(
            f"reservation {reservation.order_id}: refusing to write "
            f"{reservation.status.value} over the stored status"
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
