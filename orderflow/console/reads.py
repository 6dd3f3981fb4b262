"""What the console's pages show, read with the same code the CLI uses (`orderflow status`,
`saga show`, `dlq list`) plus keyed pages over orders and saga instances."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from inventory_svc import queries as inventory_queries
from libs.messaging.connection import connect as amqp_connect
from libs.outbox.relay import leader
from libs.pg import Conn, Cursor, create_pool
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
    """The console's reads.

    Dead letters are read at most every ``letters_ttl`` seconds (a look at a dead-letter queue
    takes every letter and gives it back: with a thousand letters that is a fifth of a second
    of the broker's time, and a quorum queue counts each look as a delivery); pages say when
    they were read, ``fresh`` reads again, and every action on letters forgets what was read."""

    def __init__(self, settings: Settings, *, letters_ttl: float = 5.0) -> None:
        self.settings = settings
        self.definition = coordinator(settings).definition
        self.letters_ttl = letters_ttl
        self._letters: dict[str | None, tuple[float, list[dlq.Letter]]] = {}
        self._letters_lock = asyncio.Lock()
        self._pools: dict[str, asyncpg.Pool[Any]] = {}
        self._amqp: AbstractRobustConnection | None = None
        self._opening = asyncio.Lock()

    # -- connections: a small pool per database and one broker connection, opened on first use

    @asynccontextmanager
    async def db(self, service: str) -> AsyncIterator[Conn]:
        pool = self._pools.get(service)
        if pool is None:
            async with self._opening:
                pool = self._pools.get(service)
                if pool is None:
                    pool = await create_pool(self.settings.dsn_for(service), min_size=1, max_size=4)
                    self._pools[service] = pool
        async with pool.acquire() as conn:
            yield conn

    async def amqp(self) -> AbstractRobustConnection:
        async with self._opening:
            if self._amqp is None:
                self._amqp = await amqp_connect(self.settings.amqp_url, name="orderflow-console")
            return self._amqp

    async def close(self) -> None:
        """Close the pools and the broker connection (a request still opening one waits)."""
        async with self._opening:
            pools, self._pools = list(self._pools.values()), {}
            amqp, self._amqp = self._amqp, None
        for pool in pools:
            await pool.close()
        if amqp is not None:
            await amqp.close()

    # -- overview ---------------------------------------------------------------------------

    async def overview(self) -> Overview:
        current, orders, leaders, (read_at, letters) = await asyncio.gather(
            status(self.settings, amqp=await self.amqp(), databases=self.db),
            self._order_counts(),
            self._leaders(),
            self.letters(),
        )
        classes = Counter((x.where, x.error_class or "(none)") for x in letters)
        return Overview(current, orders, leaders, classes, read_at)

    async def _order_counts(self) -> dict[str, int]:
        async with self.db("order_svc") as conn:
            return await order_queries.count_by_status(conn)

    async def _leaders(self) -> dict[str, dict[str, Any] | None]:
        found: dict[str, dict[str, Any] | None] = {}
        for service in SERVICES:
            async with self.db(service) as conn:
                found[service] = await leader(conn, service)
        return found

    def forget_letters(self) -> None:
        """After an action on dead letters, the next look reads them again."""
        self._letters.clear()

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
        async with self.db("order_svc") as conn:
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
        async with self.db("saga") as conn:
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
        async with self.db("saga") as conn:
            return await browse.stuck_instances(conn, saga=SAGA, older_than=older_than, limit=limit)

    async def order(self, order_id: str) -> OrderPage:
        """Everything about one order: the order, its saga's timeline and plan, its payment and
        reservation, its trace."""
        page = OrderPage(order_id, None, None)

        async def from_orders() -> None:
            async with self.db("order_svc") as conn:
                page.order = await order_queries.order_detail(conn, order_id)

        async def from_saga() -> None:
            async with self.db("saga") as conn:
                page.instance = await saga_store.get_instance(conn, saga=SAGA, saga_id=order_id)
                log = await saga_store.timeline(conn, saga=SAGA, saga_id=order_id)
            page.timeline = _durations(log)

        async def from_payment() -> None:
            async with self.db("payment_svc") as conn:
                page.payment = await payment_queries.payment_of(conn, order_id)

        async def from_inventory() -> None:
            async with self.db("inventory_svc") as conn:
                page.reservation = await inventory_queries.reservation_of(conn, order_id)

        await asyncio.gather(from_orders(), from_saga(), from_payment(), from_inventory())
        if page.instance is not None:
            page.plan = browse.plan(self.definition, page.instance.state)
            page.trace_id = trace_id_of(page.instance.traceparent)
            if page.trace_id:
                page.trace_url = f"{self.settings.jaeger_url.rstrip('/')}/trace/{page.trace_id}"
        return page

    # -- dead letters -----------------------------------------------------------------------

    async def letters(
        self, queue: str | None = None, *, fresh: bool = False
    ) -> tuple[float, list[dlq.Letter]]:
        """(when they were read, the letters) of one queue or of all, at most ``letters_ttl``
        seconds old unless ``fresh``."""
        async with self._letters_lock:
            cached = self._letters.get(queue)
            if fresh or cached is None or time.time() - cached[0] > self.letters_ttl:
                read = await dlq.list_letters(
                    self.settings, queue=queue, amqp=await self.amqp(), databases=self.db
                )
                cached = self._letters[queue] = (time.time(), read)
            return cached


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
