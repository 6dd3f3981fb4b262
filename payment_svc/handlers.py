"""payment_svc's routing table: message type → handler.

Every handler takes its order's lock before it reads anything (``repository.lock_and_load``), so
the commands of one order are decided one after the other, on committed state. A transaction of
several commands takes all their orders' locks and loads all they read at once first
(:func:`prepare`); each handler then reads from that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.payment import ProcessPayment, RefundPayment
from libs.messages import Envelope
from libs.pg import Conn
from libs.service import Handler, HandlerContext
from payment_svc.adapters import repository
from payment_svc.domain.model import process_payment, refund_payment


async def on_process_payment(command: ProcessPayment, ctx: HandlerContext) -> None:
    existing, customer = await repository.lock_and_load(
        ctx.conn, ctx.shared, command.order_id, customer_id=command.customer_id
    )
    before = existing.status if existing else None
    payment = process_payment(command, existing=existing, customer=customer)
    await repository.save(ctx.conn, payment, customer=customer, before=before, shared=ctx.shared)
    ctx.collect(payment)


async def on_refund_payment(command: RefundPayment, ctx: HandlerContext) -> None:
    existing, customer = await repository.lock_and_load(
        ctx.conn, ctx.shared, command.order_id, customer_id=None
    )
    before = existing.status if existing else None
    payment = refund_payment(command.order_id, existing=existing, customer=customer)
    await repository.save(ctx.conn, payment, customer=customer, before=before, shared=ctx.shared)
    ctx.collect(payment)


async def prepare(
    conn: Conn, items: Sequence[tuple[Envelope, Any]], shared: dict[str, Any]
) -> None:
    """Lock the orders of a transaction's commands and load what they read, at once."""
    commands = [m for _, m in items if isinstance(m, ProcessPayment | RefundPayment)]
    if commands:
        await repository.load_batch(
            conn,
            shared,
            [c.order_id for c in commands],
            [c.customer_id for c in commands if isinstance(c, ProcessPayment)],
        )


HANDLERS: dict[type, Handler] = {
    ProcessPayment: on_process_payment,
    RefundPayment: on_refund_payment,
}
