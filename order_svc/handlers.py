"""order_svc's routing table: message type → handler, and the refuser of invalid PlaceOrders."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import TypeAdapter, ValidationError

from contracts.order import ApproveOrder, PlaceOrder, RejectOrder
from contracts.types import Id
from libs.errors import InvalidMessageData, PoisonMessage
from libs.messages import Envelope
from libs.observability import get_logger
from libs.service import Handler, HandlerContext, Refuser
from order_svc.adapters import repository
from order_svc.domain.model import Order
from order_svc.settings import OrderSettings

log = get_logger(__name__)
_ORDER_IDS = uuid.UUID("2b0c8f64-54d5-4b8e-9a0e-5d1f1c3b7a90")
_CUSTOMER_ID: TypeAdapter[str] = TypeAdapter(Id)  # the contract's customer id
_settings = OrderSettings()


def configure(settings: OrderSettings) -> None:
    """Set the limits the handlers apply; called once by the composition root (bootstrap)."""
    global _settings
    _settings = settings


def _well_formed(customer: Any) -> str | None:
    """The customer id when the contract would accept it, else None."""
    try:
        return _CUSTOMER_ID.validate_python(customer, strict=True)
    except ValidationError:
        return None


def order_id_for(candidate: Any, message_id: str) -> str:
    """The order a PlaceOrder names: its ``order_id`` when that is a UUID (canonical form), else
    one derived from the message id, so a redelivery names the same order."""
    if isinstance(candidate, str):
        try:
            return str(uuid.UUID(candidate))
        except ValueError:
            pass
    return str(uuid.uuid5(_ORDER_IDS, message_id))


async def place_order(command: PlaceOrder, ctx: HandlerContext) -> None:
    order_id = order_id_for(command.order_id, ctx.envelope.id)
    catalog = await repository.prices(ctx.conn, {item.sku for item in command.items})
    order = Order.place(command, order_id=order_id, catalog=catalog, max_total=_settings.max_total)
    if not await repository.add(ctx.conn, order, placed_by=ctx.envelope.id):
        await _repeated(ctx, order_id)
        return
    if order.refused:
        log.info("order.refused", order_id=order_id, reason=order.reason)
    ctx.collect(order)


async def refuse_place_order(envelope: Envelope, error: PoisonMessage, ctx: HandlerContext) -> bool:
    """A PlaceOrder whose data fails the schema: answer it with OrderRejected instead of a
    dead letter, when that is safe. True when answered; False to dead-letter it as before.

    The order is the one ``data.order_id`` names (or derived from the message id). It is stored
    refused; when an order with that id exists already, only a refused one is answered again:
    garbage naming a real order's id must not reject it, and is dead-lettered.
    """
    data = envelope.data if isinstance(envelope.data, dict) else {}
    order_id = order_id_for(data.get("order_id"), envelope.id)
    customer = data.get("customer_id")
    order = Order.refuse(
        order_id=order_id,
        # only a well-formed id is kept: a stranger's text may hold NUL or lone surrogates,
        # which PostgreSQL cannot store
        customer_id=_well_formed(customer),
        currency="USD",
        reason=str(error),
    )
    if not await repository.add(ctx.conn, order, placed_by=envelope.id):
        return await _repeated(ctx, order_id)
    log.info("order.refused", order_id=order_id, reason=order.reason, invalid_data=True)
    ctx.collect(order)
    ctx.write_collected()  # into ctx.outbox now: the caller flushes it with the commit
    return True


async def _repeated(ctx: HandlerContext, order_id: str) -> bool:
    """Another PlaceOrder for an existing order: a refused order gets its answer again, any
    other is left alone (its saga answers). True when answered."""
    existing = await repository.get(ctx.conn, order_id, for_update=False)
    log.info("order.place_repeated", order_id=order_id)
    if existing is None or not existing.refused:
        return False
    existing.restate_refusal()
    ctx.collect(existing)
    ctx.write_collected()
    return True


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
REFUSALS: dict[str, Refuser] = {PlaceOrder.TYPE: refuse_place_order}
"""What the runner may call for a delivery whose data fails validation (see bootstrap)."""
