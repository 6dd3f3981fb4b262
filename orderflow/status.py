"""`orderflow status`: per service, what is waiting where."""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.topology import QUEUES
from libs.messaging import deadletters
from libs.messaging.connection import connect as amqp_connect
from libs.outbox import store as outbox
from libs.pg import connection as pg_connection
from libs.saga import store as saga_store
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


async def status(settings: Settings) -> Status:
    result = Status()
    connection = await amqp_connect(settings.amqp_url, name="orderflow-status")
    try:
        for service in SERVICES:
            async with pg_connection(settings.dsn_for(service)) as conn:
                stats = await outbox.stats(conn)
                if service == "saga":
                    result.sagas = await saga_store.count_by_status(conn, saga=order_saga.NAME)
            queue = QUEUES[service]
            depth, consumers = await deadletters.depth(connection, queue.name)
            dead, _ = await deadletters.depth(connection, queue.dead_letter_queue)
            result.services.append(
                ServiceStatus(
                    service,
                    stats.pending,
                    stats.oldest_pending_seconds,
                    stats.dead,
                    queue.name,
                    depth,
                    consumers,
                    dead,
                )
            )
    finally:
        await connection.close()
    return result
