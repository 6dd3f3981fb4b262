"""Customers, payments and the ledger in PostgreSQL, on the handler's transaction.

Per-order serialisation (issue #12). ``SELECT ... FOR UPDATE`` on ``payments`` locks nothing
while the order has no row yet, so a RefundPayment racing the first ProcessPayment of its order
used to see no payment, decide on a tombstone, and overwrite the CAPTURED row with CANCELLED once
the charge committed (money taken, never refunded). Every handler therefore calls
:func:`lock_order` first: a transaction-scoped advisory lock on the order, taken before anything
is read, so the handlers of one order run one after the other and each sees what the previous one
committed (READ COMMITTED takes a fresh snapshot per statement, so the reads that follow the lock
see the holder's commit).

Why an advisory lock, its key, and why no two of them deadlock: ``libs.pg.locks``. Customer
rows are then locked blocking: one transaction per message takes order → payment row →
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

from decimal import Decimal

from libs.errors import StateOverwriteRefused
from libs.pg import Conn, KeyLock
from payment_svc.domain.model import Customer, Payment, PaymentStatus

ORDER_LOCK = KeyLock(b"PAYM", "order")
"""This table's per-order transaction lock (see ``libs.pg.locks``)."""


class PaymentOverwriteRefused(StateOverwriteRefused):
    """``save`` refused a status change the payment rules do not allow."""


async def lock_order(conn: Conn, order_id: str) -> None:
    """Take this order's transaction lock first, before reading anything (``libs.pg.locks``)."""
    await ORDER_LOCK.take(conn, order_id)


async def load(
    conn: Conn, order_id: str, *, customer_id: str | None
) -> tuple[Payment | None, Customer | None]:
    """The order's payment and the customer (``customer_id``, else the payment's), both
    row-locked, payment first, in one round trip."""
    row = await conn.fetchrow(
        """WITH p AS (
               SELECT customer_id, amount, status, reason FROM payments
                WHERE order_id = $1 FOR UPDATE),
           c AS (
               SELECT id, balance FROM customers
                WHERE id = coalesce($2, (SELECT customer_id FROM p)) FOR UPDATE)
           SELECT p.customer_id, p.amount, p.status, p.reason, c.id, c.balance
             FROM (SELECT 1) AS one LEFT JOIN p ON true LEFT JOIN c ON true""",
        order_id,
        customer_id,
    )
    assert row is not None  # the outer joins always give one row
    payment = (
        Payment(
            order_id=order_id,
            customer_id=row["customer_id"],
            amount=Decimal(row["amount"]),
            status=PaymentStatus(row["status"]),
            reason=row["reason"],
        )
        if row["status"] is not None
        else None
    )
    customer = Customer(row["id"], Decimal(row["balance"])) if row["id"] is not None else None
    return payment, customer


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
