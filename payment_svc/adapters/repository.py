"""Customers, payments and the ledger in PostgreSQL, on the handler's transaction.

``UNIQUE (order_id, kind)`` on the ledger is the last line of defence: a second charge or refund
for one order cannot be written, whatever a bug upstream does.
"""

from __future__ import annotations

from decimal import Decimal

from libs.pg.pool import Conn
from payment_svc.domain.model import Customer, Payment, PaymentStatus


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
    statement (one round trip)."""
    kind = None
    if payment.status is not before and customer is not None:
        kind = {PaymentStatus.CAPTURED: "charge", PaymentStatus.REFUNDED: "refund"}.get(
            payment.status
        )
    await conn.execute(
        """WITH p AS (
               INSERT INTO payments (order_id, customer_id, amount, status, reason)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (order_id) DO UPDATE
                  SET status = EXCLUDED.status, reason = EXCLUDED.reason,
                      updated_at = clock_timestamp()),
           c AS (
               UPDATE customers SET balance = $6 WHERE id = $7 AND $8::text IS NOT NULL)
           INSERT INTO ledger (order_id, customer_id, kind, amount)
           SELECT $1, $7, $8, $3 WHERE $8::text IS NOT NULL""",
        payment.order_id,
        payment.customer_id,
        payment.amount,
        payment.status.value,
        payment.reason,
        customer.balance if customer else None,
        customer.id if customer else None,
        kind,
    )
