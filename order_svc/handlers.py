"""order_svc's routing table: message type → handler."""

from __future__ import annotations

import uuid

from libs.contracts.order import ApproveOrder, PlaceOrder, RejectOrder
from libs.errors import InvalidMessageData
from libs.observability.logging import get_logger
from libs.service.runner import Handler, HandlerContext
from order_svc.adapters import repository
from order_svc.domain.model import Order

log = get_logger(__name__)
_ORDER_IDS = uuid.UUID("2b0c8f64-54d5-4b8e-9a0e-5d1f1c3b7a90")


async def place_order(command: PlaceOrder, ctx: HandlerContext) -> None:
    # No client-chosen id: derive one from the message id, so a redelivery names the same order.
    order_id = command.order_id or str(uuid.uuid5(_ORDER_IDS, ctx.envelope.id))
    order = Order.place(command, order_id=order_id)
    if not await repository.add(ctx.conn, order, placed_by=ctx.envelope.id):
        log.info("order.place_repeated", order_id=order_id)
        return
    ctx.collect(order)


async def approve_order(command: ApproveOrder, ctx: HandlerContext) -> None:
    order = await _existing(ctx, command.order_id)
    order.approve()
    await repository.save_status(ctx.conn, order)
    ctx.collect(order)


async def reject_order(command: RejectOrder, ctx: HandlerContext) -> None:
    order = await _existing(ctx, command.order_id)
    order.reject(command.reason)
    await repository.save_status(ctx.conn, order)
    ctx.collect(order)


async def _existing(ctx: HandlerContext, order_id: str) -> Order:
    order = await repository.get(ctx.conn, order_id)
    if order is None:
        raise InvalidMessageData(f"no order {order_id}")
    return order


HANDLERS: dict[type, Handler] = {
    PlaceOrder: place_order,
    ApproveOrder: approve_order,
    RejectOrder: reject_order,
}
