"""What the console's pages show, read with the same code the CLI uses (`orderflow status`,
`saga show`, `dlq list`) plus keyed pages over orders and saga instances."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inventory_svc import queries as inventory_queries
from libs.outbox.relay import leader
from libs.pg import Cursor, connection
from libs.saga import browse
from libs.saga import store as saga_store
from libs.saga.browse import PlannedStep
from libs.saga.store import InstanceRow, LogRow
from libs.settings import Settings
from order_svc import queries as order_queries
from orderflow import dlq
from orderflow.inspect import trace_id_of
from orderflow.status import Status, status
from orderflow.system import SERVICES
from payment_svc import queries as payment_queries
from saga.bootstrap import coordinator
from saga.domain import order_saga

__all__ = ["Reads"]

SAGA = order_saga.NAME


def is_order_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


@dataclass
class Overview:
    status: Status
    orders: dict[str, int]
    leaders: dict[str, dict[str, Any] | None]
    letter_classes: Counter[tuple[str, str]]  # (where, error class) -> letters
    letters_read_at: float


@dataclass
class TimelineRow:
    row: LogRow
    since_previous_ms: float | None
    since_start_ms: float


@dataclass
class OrderPage:
    order_id: str
    order: dict[str, Any] | None
    instance: InstanceRow | None
    timeline: list[TimelineRow] = field(default_factory=list)
    plan: list[PlannedStep] = field(default_factory=list)
    payment: dict[str, Any] | None = None
    reservation: dict[str, Any] | None = None
    trace_id: str | None = None
    trace_url: str | None = None


class Reads:
    """The console's reads. Dead letters are read at most every ``letters_ttl`` seconds for the
    overview (a look at a dead-letter queue takes its letters and gives them back)."""

    def __init__(self, settings: Settings, *, letters_ttl: float = 10.0) -> None:
        self.settings = settings
        self.definition = coordinator(settings).definition
        self.letters_ttl = letters_ttl
        self._letters: tuple[float, list[dlq.Letter]] | None = None
        self._letters_lock = asyncio.Lock()

    # -- overview ---------------------------------------------------------------------------

    async def overview(self) -> Overview:
        current, orders, leaders, (read_at, letters) = await asyncio.gather(
            status(self.settings), self._order_counts(), self._leaders(), self._cached_letters()
        )
        classes = Counter((x.where, x.error_class or "(none)") for x in letters)
        return Overview(current, orders, leaders, classes, read_at)

    async def _order_counts(self) -> dict[str, int]:
        async with connection(self.settings.dsn_for("order_svc")) as conn:
            return await order_queries.count_by_status(conn)

    async def _leaders(self) -> dict[str, dict[str, Any] | None]:
        found: dict[str, dict[str, Any] | None] = {}
        for service in SERVICES:
            async with connection(self.settings.dsn_for(service)) as conn:
                found[service] = await leader(conn, service)
        return found

    async def _cached_letters(self) -> tuple[float, list[dlq.Letter]]:
        async with self._letters_lock:
            now = time.time()
            if self._letters is None or now - self._letters[0] > self.letters_ttl:
                self._letters = (now, await dlq.list_letters(self.settings))
            return self._letters

    def forget_letters(self) -> None:
        """After an action on dead letters, the next overview reads them again."""
        self._letters = None

    # -- orders and sagas -------------------------------------------------------------------

    async def orders(
        self,
        *,
        status: str | None,
        customer: str | None,
        older_than: float | None,
        after: Cursor | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], Cursor | None]:
        async with connection(self.settings.dsn_for("order_svc")) as conn:
            return await order_queries.page_orders(
                conn,
                status=status,
                customer=customer,
                older_than=older_than,
                after=after,
                limit=limit,
            )

    async def sagas(
        self,
        *,
        state: str | None,
        step: str | None,
        customer: str | None,
        older_than: float | None,
        after: Cursor | None,
        limit: int,
    ) -> tuple[list[InstanceRow], Cursor | None]:
        async with connection(self.settings.dsn_for("saga")) as conn:
            return await browse.page_instances(
                conn,
                saga=SAGA,
                status=state,
                step=step,
                data={"customer_id": customer} if customer else None,
                older_than=older_than,
                after=after,
                limit=limit,
            )

    async def stuck(self, older_than: float, limit: int = 100) -> list[InstanceRow]:
        async with connection(self.settings.dsn_for("saga")) as conn:
            return await browse.stuck_instances(conn, saga=SAGA, older_than=older_than, limit=limit)

    async def order(self, order_id: str) -> OrderPage:
        """Everything about one order: the order, its saga's timeline and plan, its payment and
        reservation, its trace."""
        page = OrderPage(order_id, None, None)

        async def from_orders() -> None:
            async with connection(self.settings.dsn_for("order_svc")) as conn:
                page.order = await order_queries.order_detail(conn, order_id)

        async def from_saga() -> None:
            async with connection(self.settings.dsn_for("saga")) as conn:
                page.instance = await saga_store.get_instance(conn, saga=SAGA, saga_id=order_id)
                log = await saga_store.timeline(conn, saga=SAGA, saga_id=order_id)
            page.timeline = _durations(log)

        async def from_payment() -> None:
            async with connection(self.settings.dsn_for("payment_svc")) as conn:
                page.payment = await payment_queries.payment_of(conn, order_id)

        async def from_inventory() -> None:
            async with connection(self.settings.dsn_for("inventory_svc")) as conn:
                page.reservation = await inventory_queries.reservation_of(conn, order_id)

        await asyncio.gather(from_orders(), from_saga(), from_payment(), from_inventory())
        if page.instance is not None:
            page.plan = browse.plan(self.definition, page.instance.state)
            page.trace_id = trace_id_of(page.instance.traceparent)
            if page.trace_id:
                page.trace_url = f"{self.settings.jaeger_url.rstrip('/')}/trace/{page.trace_id}"
        return page

    # -- dead letters -----------------------------------------------------------------------

    async def letters(self, queue: str | None = None) -> list[dlq.Letter]:
        letters = await dlq.list_letters(self.settings, queue=queue)
        if queue is None:
            self._letters = (time.time(), letters)
        return letters


def _durations(log: list[LogRow]) -> list[TimelineRow]:
    rows: list[TimelineRow] = []
    start: datetime | None = log[0].at if log else None
    previous: datetime | None = None
    for row in log:
        assert start is not None
        rows.append(
            TimelineRow(
                row,
                (row.at - previous).total_seconds() * 1000 if previous else None,
                (row.at - start).total_seconds() * 1000,
            )
        )
        previous = row.at
    return rows
