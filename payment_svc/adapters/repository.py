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

A batch (several commands in one transaction) is locked and loaded at once by
:func:`load_batch`: every order's lock in one round trip (``KeyLock.take_all``: none waited for,
one busy order sends the batch back to one message per transaction), then every payment and
every customer the commands touch in one statement — customers locked in id order, so two
batches sharing customers cannot deadlock on them. Handlers read their order from the
:class:`Batch` (:func:`lock_and_load`) and :func:`save` writes the decided payment back into it,
so a later command of the same order, or of the same customer, sees what an earlier one did, as
it would see it committed.

``save`` is conditional as a second guard: it refuses any status change but ``CAPTURED →
REFUNDED`` (and rewriting the same status), so even a bug cannot turn a capture into a tombstone;
a refused write moves no money and raises. ``UNIQUE (order_id, kind)`` on the ledger is the last
line of defence: a second charge or refund for one order cannot be written, whatever a bug
upstream does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

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


@dataclass(slots=True)
class Batch:
    """One transaction's orders, locked, with their payments (``None``: none yet) and the
    customers its commands touch, as loaded by :func:`load_batch` and updated by :func:`save`."""

    payments: dict[str, Payment | None] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)


BATCH = "payment_svc.batch"
"""Where a transaction's :class:`Batch` is kept in the handlers' shared dict."""


async def load_batch(
    conn: Conn, shared: dict[str, Any], order_ids: Sequence[str], customer_ids: Sequence[str]
) -> None:
    """Lock every order of ``order_ids`` (first, before anything is read), then load their
    payments and the customers — ``customer_ids`` and the payments' own — row-locked, into
    ``shared``: two round trips for the whole batch."""
    await ORDER_LOCK.take_all(conn, order_ids)
    rows = await conn.fetch(
        """WITH p AS (
               SELECT order_id, customer_id, amount, status, reason FROM payments
                WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE),
           c AS (
               SELECT id, balance FROM customers
                WHERE id = ANY($2::text[] || ARRAY(SELECT customer_id FROM p))
                ORDER BY id FOR UPDATE)
           SELECT order_id::text, customer_id, amount, status, reason, NULL::numeric AS balance
             FROM p
           UNION ALL
           SELECT NULL, id, NULL, NULL, NULL, balance FROM c""",
        sorted(set(order_ids)),
        sorted(set(customer_ids)),
    )
    batch = Batch(payments=dict.fromkeys(order_ids))
    for row in rows:
        if row["order_id"] is None:
            batch.customers[row["customer_id"]] = Customer(
                row["customer_id"], Decimal(row["balance"])
            )
        else:
            batch.payments[row["order_id"]] = Payment(
                order_id=row["order_id"],
                customer_id=row["customer_id"],
                amount=Decimal(row["amount"]),
                status=PaymentStatus(row["status"]),
                reason=row["reason"],
            )
    shared[BATCH] = batch


async def lock_and_load(
    conn: Conn, shared: dict[str, Any], order_id: str, *, customer_id: str | None
) -> tuple[Payment | None, Customer | None]:
    """The order's payment and the customer (``customer_id``, else the payment's): from the
    transaction's :class:`Batch` when :func:`load_batch` loaded this order, else locked
    (:func:`lock_order`, first) and loaded now."""
    batch: Batch | None = shared.get(BATCH)
    if batch is None or order_id not in batch.payments:
        await lock_order(conn, order_id)
        return await load(conn, order_id, customer_id=customer_id)
    existing = batch.payments[order_id]
    if customer_id is None and existing is not None:
        customer_id = existing.customer_id
    return existing, batch.customers.get(customer_id) if customer_id is not None else None


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
    conn: Conn,
    payment: Payment,
    *,
    customer: Customer | None,
    before: PaymentStatus | None,
    shared: dict[str, Any] | None = None,
) -> None:
    """Write the payment, the customer's balance and the ledger entry the change implies, in one
    statement (one round trip); once written, the payment is also the one the transaction's
    :class:`Batch` (in ``shared``) holds for its order.

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
    batch: Batch | None = (shared or {}).get(BATCH)
    if batch is not None and payment.order_id in batch.payments:
        batch.payments[payment.order_id] = payment
