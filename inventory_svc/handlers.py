"""inventory_svc's routing table: message type → handler.

Every handler takes its order's lock before it reads anything (``repository.lock_order``), so
the commands of one order are decided one after the other, on committed state.
"""

from __future__ import annotations

from contracts.inventory import ReleaseInventory, ReserveInventory
from inventory_svc.adapters import repository
from inventory_svc.domain.model import ReservationStatus, release, reserve
from libs.service import Handler, HandlerContext


async def on_reserve(command: ReserveInventory, ctx: HandlerContext) -> None:
    await repository.lock_order(ctx.conn, command.order_id)  # first: see the repository's doc
    existing = await repository.get_reservation(ctx.conn, command.order_id)
    stock = (
        {} if existing else await repository.lock_stock(ctx.conn, (i.sku for i in command.items))
    )
    reservation = reserve(command.order_id, command.items, existing=existing, stock=stock)
    await repository.save(ctx.conn, reservation, stock=stock, is_new=existing is None)
    ctx.collect(reservation)


async def on_release(command: ReleaseInventory, ctx: HandlerContext) -> None:
    await repository.lock_order(ctx.conn, command.order_id)  # first: see the repository's doc
    existing = await repository.get_reservation(ctx.conn, command.order_id)
    holds_stock = existing is not None and existing.status is ReservationStatus.RESERVED
    # only a reservation that holds stock gives any back: lock no hot SKU row for nothing
    stock = (
        await repository.lock_stock(ctx.conn, (sku for sku, _ in existing.lines))
        if existing is not None and holds_stock
        else {}
    )
    reservation = release(command.order_id, existing=existing, stock=stock)
    await repository.save(ctx.conn, reservation, stock=stock, is_new=existing is None)
    ctx.collect(reservation)


HANDLERS: dict[type, Handler] = {
    ReserveInventory: on_reserve,
    ReleaseInventory: on_release,
}
