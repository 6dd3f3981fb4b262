"""`orderflow status`: per service, what is waiting where.

The outbox and saga figures are the gauges the services export (``orderflow.outbox.*``,
``orderflow.saga.*``), read by the same functions the services' samplers call, so the CLI and
Prometheus never disagree on what a figure means."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from aio_pika.abc import AbstractRobustConnection

from contracts.topology import QUEUES
from libs.messaging import deadletters
from libs.messaging.connection import connect as amqp_connect
from libs.pg import Conn
from libs.pg import connection as pg_connection
from libs.saga import store as saga_store
from libs.service.upkeep import outbox_gauges
from libs.settings import Settings
from orderflow.system import SERVICES
from saga.domain import order_saga


@dataclass
class ServiceStatus:
    service: str
    outbox_pending: int
    oldest_pending_seconds: float | None
    outbox_dead: int
    queue: str
    queue_depth: int
    consumers: int
    dead_letters: int


@dataclass
class Status:
    services: list[ServiceStatus] = field(default_factory=list)
    sagas: dict[str, int] = field(default_factory=dict)
    stuck: int = 0
    oldest_seconds: float = 0.0


Databases = Callable[[str], AbstractAsyncContextManager[Conn]]
"""A connection to a service's database, by service name (the console lends pooled ones)."""


async def status(
    settings: Settings,
    *,
    amqp: AbstractRobustConnection | None = None,
    databases: Databases | None = None,
) -> Status:
    """What is waiting where; with the caller's broker connection and databases, if given."""
    result = Status()
    connection = amqp or await amqp_connect(settings.amqp_url, name="orderflow-status")
    open_db = databases or (lambda service: pg_connection(settings.dsn_for(service)))
    try:
        for service in SERVICES:
            async with open_db(service) as conn:
                gauges = {name: value for name, _, value in await outbox_gauges(conn)}
                oldest = gauges["orderflow.outbox.lag"]
                if service == "saga":
                    result.sagas = await saga_store.count_by_status(conn, saga=order_saga.NAME)
                    saga = await saga_store.gauges(conn, saga=order_saga.NAME)
                    result.stuck = int(sum(v for n, _, v in saga if n == "orderflow.saga.stuck"))
                    result.oldest_seconds = max(
                        (v for n, _, v in saga if n == "orderflow.saga.oldest"), default=0.0
                    )
            queue = QUEUES[service]
            depth, consumers = await deadletters.depth(connection, queue.name)
            dead, _ = await deadletters.depth(connection, queue.dead_letter_queue)
            result.services.append(
                ServiceStatus(
                    service,
                    int(gauges["orderflow.outbox.pending"]),
                    oldest if gauges["orderflow.outbox.pending"] else None,
                    int(gauges["orderflow.outbox.dead"]),
                    queue.name,
                    depth,
                    consumers,
                    dead,
                )
            )
    finally:
        if amqp is None:
            await connection.close()
    return result
