"""payment_svc's routing table: message type → handler.

Every handler takes its order's lock before it reads anything (``repository.lock_order``), so
the commands of one order are decided one after the other, on committed state.
"""

from __future__ import annotations

from contracts.payment import ProcessPayment, RefundPayment
from libs.service import Handler, HandlerContext
from payment_svc.adapters import repository
from payment_svc.domain.model import process_payment, refund_payment


async def on_process_payment(command: ProcessPayment, ctx: HandlerContext) -> None:
    await repository.lock_order(ctx.conn, command.order_id)  # first: see the repository's doc
    existing, customer = await repository.load(
        ctx.conn, command.order_id, customer_id=command.customer_id
    )
    before = existing.status if existing else None
    payment = process_payment(command, existing=existing, customer=customer)
    await repository.save(ctx.conn, payment, customer=customer, before=before)
    ctx.collect(payment)


async def on_refund_payment(command: RefundPayment, ctx: HandlerContext) -> None:
    await repository.lock_order(ctx.conn, command.order_id)  # first: see the repository's doc
    existing, customer = await repository.load(ctx.conn, command.order_id, customer_id=None)
    before = existing.status if existing else None
    payment = refund_payment(command.order_id, existing=existing, customer=customer)
    await repository.save(ctx.conn, payment, customer=customer, before=before)
    ctx.collect(payment)


HANDLERS: dict[type, Handler] = {
    ProcessPayment: on_process_payment,
    RefundPayment: on_refund_payment,
}
