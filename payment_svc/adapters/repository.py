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
    """Write the payment, the customer's balance, and the ledger entry the change implies."""
    await conn.execute(
        """INSERT INTO payments (order_id, customer_id, amount, status, reason)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (order_id) DO UPDATE
              SET status = EXCLUDED.status, reason = EXCLUDED.reason, updated_at = clock_timestamp()""",
        payment.order_id,
        payment.customer_id,
        payment.amount,
        payment.status.value,
        payment.reason,
    )
    if payment.status is before:
        return
    kind = {PaymentStatus.CAPTURED: "charge", PaymentStatus.REFUNDED: "refund"}.get(payment.status)
    if kind is None or customer is None:
        return
    await conn.execute(
        "UPDATE customers SET balance = $2 WHERE id = $1", customer.id, customer.balance
    )
    await conn.execute(
        "INSERT INTO ledger (order_id, customer_id, kind, amount) VALUES ($1, $2, $3, $4)",
        payment.order_id,
        customer.id,
        kind,
        payment.amount,
    )
