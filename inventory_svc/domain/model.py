"""Stock and reservations: all lines of an order or none; released once; never negative.

A reservation row exists per order once any command for it arrived: RESERVED, FAILED, RELEASED,
or CANCELLED — the tombstone a release leaves when it arrives before its reservation, so that the
late ReserveInventory fails instead of taking stock for an order that is being rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
)
from contracts.types import Line
from libs.aggregate import AggregateRoot
from libs.messages import Message


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    FAILED = "FAILED"
    RELEASED = "RELEASED"
    CANCELLED = "CANCELLED"


@dataclass(eq=False)
class Stock:
    sku: str
    on_hand: int


@dataclass(eq=False)
class Reservation(AggregateRoot):
    order_id: str
    lines: tuple[tuple[str, int], ...]
    status: ReservationStatus
    reason: str | None = None
    aggregate_type = "reservation"

    @property
    def aggregate_id(self) -> str:
        return self.order_id

    def current_answer(self) -> Message:
        if self.status is ReservationStatus.RESERVED:
            return InventoryReserved(order_id=self.order_id)
        if self.status is ReservationStatus.FAILED:
            return InventoryReservationFailed(
                order_id=self.order_id, reason=self.reason or "failed"
            )
        if self.status is ReservationStatus.CANCELLED:
            return InventoryReservationFailed(
                order_id=self.order_id, reason="reservation was cancelled before it was made"
            )
        return InventoryReservationFailed(order_id=self.order_id, reason="reservation was released")


def reserve(
    order_id: str,
    items: tuple[Line, ...],
    *,
    existing: Reservation | None,
    stock: Mapping[str, Stock],
) -> Reservation:
    """Take stock for every line, or for none; ``stock`` holds the rows of the ordered SKUs."""
    if existing is not None:
        existing.record(existing.current_answer())
        return existing
    lines = tuple((item.sku, item.quantity) for item in items)
    missing = sorted(sku for sku, _ in lines if sku not in stock)
    short = sorted(sku for sku, qty in lines if sku in stock and stock[sku].on_hand < qty)
    if missing or short:
        reason = (
            f"unknown SKU {', '.join(missing)}"
            if missing
            else f"not enough stock for {', '.join(short)}"
        )
        failed = Reservation(
            order_id=order_id, lines=lines, status=ReservationStatus.FAILED, reason=reason
        )
        failed.record(failed.current_answer())
        return failed
    for sku, qty in lines:
        stock[sku].on_hand -= qty
    reservation = Reservation(order_id=order_id, lines=lines, status=ReservationStatus.RESERVED)
    reservation.record(reservation.current_answer())
    return reservation


def release(
    order_id: str, *, existing: Reservation | None, stock: Mapping[str, Stock]
) -> Reservation:
    """Give reserved stock back once; leave a tombstone when nothing was reserved yet."""
    if existing is None:
        tombstone = Reservation(order_id=order_id, lines=(), status=ReservationStatus.CANCELLED)
        tombstone.record(InventoryReleased(order_id=order_id))
        return tombstone
    if existing.status is ReservationStatus.RESERVED:
        for sku, qty in existing.lines:
            stock[sku].on_hand += qty
        existing.status = ReservationStatus.RELEASED
    existing.record(InventoryReleased(order_id=order_id))
    return existing
