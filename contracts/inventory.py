"""The inventory context: reserving all lines of an order or none, releasing once."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contracts.types import MAX_LINES, Line, OrderId, Reason
from libs.messages.registry import Command, Event

Lines = Annotated[tuple[Line, ...], Field(min_length=1, max_length=MAX_LINES)]


class ReserveInventory(Command):
    TYPE = "inventory.reserve_inventory.v1"
    order_id: OrderId
    items: Lines


class ReleaseInventory(Command):
    TYPE = "inventory.release_inventory.v1"
    order_id: OrderId


class InventoryReserved(Event):
    TYPE = "inventory.inventory_reserved.v1"
    order_id: OrderId


class InventoryReservationFailed(Event):
    TYPE = "inventory.inventory_reservation_failed.v1"
    order_id: OrderId
    reason: Reason


class InventoryReleased(Event):
    TYPE = "inventory.inventory_released.v1"
    order_id: OrderId


MESSAGES = (
    ReserveInventory,
    ReleaseInventory,
    InventoryReserved,
    InventoryReservationFailed,
    InventoryReleased,
)
