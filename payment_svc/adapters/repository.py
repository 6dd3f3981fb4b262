"""Customers, payments and the ledger in PostgreSQL, on the handler's transaction.

Per-order serialisation (issue #12). ``SELECT ... FOR UPDATE`` on ``payments`` locks nothing
while the order has no row yet, so a RefundPayment racing the first ProcessPayment of its order
used to see no payment, decide on a tombstone, and overwrite the CAPTURED row with CANCELLED once
the charge committed (money taken, never refunded). Every handler therefore calls
:func:`lock_order` first: a transaction-scoped advisory lock on the order, taken before anything
is read, so the handlers of one order run one after the other and each sees what the previous one
committed (READ COMMITTED takes a fresh snapshot per statement, so the reads that follow the lock
see the holder's commit).

Why an advisory lock and not create-or-lock (insert a placeholder row, then ``FOR UPDATE``): it
needs no placeholder state in the schema that readers and the checker would have to skip, and it
costs one round trip like the placeholder insert would.

The key: ``pg_advisory_xact_lock(ORDER_LOCK_CLASS, key)``, the two-int form, with a class id of
its own for this table ("PAYM") and ``key`` a stable 32-bit hash (BLAKE2b) of the order's uuid
bytes. The two-int key space is disjoint from the single-bigint one, which the outbox relay's
leader lock (``pg_try_advisory_lock(hashtext(...))``) and the migrations lock use, so they never
collide. Two orders whose keys collide (1 in 2**32) merely wait for each other.

Deadlocks. A handler may run inside a batch transaction that handles many messages
(``MessageRunner._batch_transaction``), so one transaction may take several order locks, in
message order: two batch workers or replicas taking them in opposite orders could deadlock. The
rule :func:`lock_order` follows avoids it: a transaction *waits* for an order lock only when it
holds no other order lock; one that already holds some and finds this order busy does not wait
but raises :class:`~libs.errors.ConcurrencyConflict` at once — the batch rolls back, releasing
its locks, and the runner handles its messages one per transaction, where waiting is safe.
Cycles among order locks are thus impossible; contention on one order is rare (a duplicate, a
charge racing its refund), so the fallback costs little. Customer rows are still locked
blocking, after the order lock: one transaction per message takes order → payment row →
customer, a fixed order; only two batches sharing customers in opposite orders can still
deadlock on customer rows, which PostgreSQL detects (40P01, retried as a conflict) — failing fast
there too would make every batch that meets a busy customer fall back.

``save`` is conditional as a second guard: it refuses any status change but ``CAPTURED →
REFUNDED`` (and rewriting the same status), so even a bug cannot turn a capture into a tombstone;
a refused write moves no money and raises. ``UNIQUE (order_id, kind)`` on the ledger is the last
line of defence: a second charge or refund for one order cannot be written, whatever a bug
upstream does.
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal

from libs.errors import ConcurrencyConflict
from libs.pg.pool import Conn
from payment_svc.domain.model import Customer, Payment, PaymentStatus

ORDER_LOCK_CLASS = int.from_bytes(b"PAYM", "big")
"""The advisory lock class of payments' per-order locks (two-int form)."""


class PaymentOverwriteRefused(ConcurrencyConflict):
    """``save`` refused a status change the payment rules do not allow (retried by the runner:
    the retry re-reads the payment under the order lock)."""


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


async def get_payment(conn: Conn, order_id: str) -> Payment | None:
    row = await conn.fetchrow(
        "SELECT customer_id, amount, status, reason FROM payments WHERE order_id = $1 FOR UPDATE",
        order_id,
    )
    if row is None:
        return None
    return Payment(
        order_id=order_id,
        customer_id=row["customer_id"],
        amount=Decimal(row["amount"]),
        status=PaymentStatus(row["status"]),
        reason=row["reason"],
    )


async def get_customer(conn: Conn, customer_id: str | None) -> Customer | None:
    if customer_id is None:
        return None
    row = await conn.fetchrow(
        "SELECT id, balance FROM customers WHERE id = $1 FOR UPDATE", customer_id
    )
    return Customer(row["id"], Decimal(row["balance"])) if row else None


async def save(
    conn: Conn, payment: Payment, *, customer: Customer | None, before: PaymentStatus | None
) -> None:
    """Write the payment, the customer's balance and the ledger entry the change implies, in one
    statement (one round trip).

    Conditional: an existing payment changes only ``CAPTURED → REFUNDED`` (or is rewritten with
    its own status); any other change writes nothing — no balance, no ledger — and raises
    :class:`PaymentOverwriteRefused`.
    """
    kind = None
    if payment.status is not before and customer is not None:
        kind = {PaymentStatus.CAPTURED: "charge", PaymentStatus.REFUNDED: "refund"}.get(
            payment.status
        )
    written = await conn.fetchval(
        """WITH p AS (
               INSERT INTO payments (order_id, customer_id, amount, status, reason)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (order_id) DO UPDATE
                  SET status = EXCLUDED.status, reason = EXCLUDED.reason,
                      updated_at = clock_timestamp()
                WHERE payments.status = EXCLUDED.status
                   OR (payments.status = 'CAPTURED' AND EXCLUDED.status = 'REFUNDED')
            RETURNING 1),
           c AS (
               UPDATE customers SET balance = $6
                WHERE id = $7 AND $8::text IS NOT NULL AND EXISTS (SELECT 1 FROM p)),
           l AS (
               INSERT INTO ledger (order_id, customer_id, kind, amount)
               SELECT $1, $7, $8, $3 WHERE $8::text IS NOT NULL AND EXISTS (SELECT 1 FROM p))
           SELECT count(*) FROM p""",
        payment.order_id,
        payment.customer_id,
        payment.amount,
        payment.status.value,
        payment.reason,
        customer.balance if customer else None,
        customer.id if customer else None,
        kind,
    )
    if not written:
        raise PaymentOverwriteRefused(
            f"payment {payment.order_id}: refusing to write {payment.status.value} over the "
            f"stored status (read as {before.value if before else 'absent'})"
        )
