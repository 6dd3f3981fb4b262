"""inventory_svc's routing table: message type → handler.

Every handler takes its order's lock before it reads anything (``repository.lock_and_load``), so
the commands of one order are decided one after the other, on committed state. A transaction of
several commands takes all their orders' locks and loads all they read at once first
(:func:`prepare`); each handler then reads from that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.inventory import ReleaseInventory, ReserveInventory
from inventory_svc.adapters import repository
from inventory_svc.domain.model import ReservationStatus, release, reserve
from libs.messages import Envelope
from libs.pg import Conn
from libs.service import Handler, HandlerContext


async def on_reserve(command: ReserveInventory, ctx: HandlerContext) -> None:
    existing = await repository.lock_and_load(ctx.conn, ctx.shared, command.order_id)
    stock = (
        {}
        if existing
        else await repository.lock_stock(
            ctx.conn, (i.sku for i in command.items), shared=ctx.shared
        )
    )
    reservation = reserve(command.order_id, command.items, existing=existing, stock=stock)
    await repository.save(
        ctx.conn, reservation, stock=stock, is_new=existing is None, shared=ctx.shared
    )
    ctx.collect(reservation)


async def on_release(command: ReleaseInventory, ctx: HandlerContext) -> None:
    existing = await repository.lock_and_load(ctx.conn, ctx.shared, command.order_id)
    holds_stock = existing is not None and existing.status is ReservationStatus.RESERVED
    # only a reservation that holds stock gives any back: lock no hot SKU row for nothing
    stock = (
        await repository.lock_stock(ctx.conn, (sku for sku, _ in existing.lines), shared=ctx.shared)
        if existing is not None and holds_stock
        else {}
    )
    reservation = release(command.order_id, existing=existing, stock=stock)
    await repository.save(
        ctx.conn, reservation, stock=stock, is_new=existing is None, shared=ctx.shared
    )
    ctx.collect(reservation)


async def prepare(
    conn: Conn, items: Sequence[tuple[Envelope, Any]], shared: dict[str, Any]
) -> None:
    """Lock the orders of a transaction's commands and load what they read, at once."""
    commands = [m for _, m in items if isinstance(m, ReserveInventory | ReleaseInventory)]
    if commands:
        await repository.load_batch(
            conn,
            shared,
            [c.order_id for c in commands],
            [
                (c.order_id, line.sku)
                for c in commands
                if isinstance(c, ReserveInventory)
                for line in c.items
            ],
            [c.order_id for c in commands if isinstance(c, ReleaseInventory)],
        )


HANDLERS: dict[type, Handler] = {
    ReserveInventory: on_reserve,
    ReleaseInventory: on_release,
}
