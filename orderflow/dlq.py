"""`orderflow dlq`: dead letters of the broker queues and of the relays, in one list."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from contracts import REGISTRY, TOPOLOGY
from contracts.permissions import allowed_senders
from contracts.topology import QUEUES
from libs.errors import OrderflowError
from libs.messaging import deadletters
from libs.messaging.connection import connect as amqp_connect
from libs.messaging.publisher import Publisher
from libs.outbox import store as outbox
from libs.pg import connection as pg_connection
from libs.settings import Settings
from orderflow.system import SERVICES


class UnknownQueue(OrderflowError):
    pass


@dataclass(frozen=True)
class Letter:
    id: str  # message id (broker) or outbox:<service>:<row id> (relay)
    where: str  # queue name, or "<service> outbox"
    type: str
    error_class: str
    error: str
    attempts: int
    dead_at: datetime | None
    body: bytes
    headers: dict[str, object]


def _queues(queue: str | None) -> list[str]:
    all_dlqs = TOPOLOGY.dead_letter_queues()
    if queue is None:
        return all_dlqs
    name = queue if queue.endswith(".dlq") else queue + ".dlq"
    if name not in all_dlqs:
        raise UnknownQueue(f"no dead-letter queue {name}; there are: {', '.join(all_dlqs)}")
    return [name]


async def list_letters(
    settings: Settings, *, queue: str | None = None, limit: int = 1000
) -> list[Letter]:
    letters: list[Letter] = []
    connection = await amqp_connect(settings.amqp_url, name="orderflow-dlq")
    try:
        for d in await deadletters.list_dead_letters(connection, _queues(queue), limit=limit):
            letters.append(
                Letter(
                    d.message_id,
                    d.queue,
                    d.type,
                    d.error_class,
                    d.error,
                    d.attempts,
                    d.dead_at,
                    d.body,
                    d.headers,
                )
            )
    finally:
        await connection.close()
    if queue is None:
        for service in SERVICES:
            async with pg_connection(settings.dsn_for(service)) as conn:
                for row in await outbox.list_dead(conn, limit=limit):
                    letters.append(
                        Letter(
                            f"outbox:{service}:{row.id}",
                            f"{service} outbox",
                            row.message_type,
                            "RelayGaveUp",
                            row.last_error or "",
                            row.attempts,
                            row.dead_at,
                            row.payload,
                            {
                                "exchange": row.exchange,
                                "routing_key": row.routing_key,
                                "message_id": row.message_id,
                            },
                        )
                    )
    return letters


def replay_policy(settings: Settings) -> deadletters.ReplayPolicy:
    """Replays go where the topology says the letter's queue consumes its type from."""
    services_of = {spec.name: service for service, spec in QUEUES.items()}

    def exchange_of(type_name: str) -> str | None:
        return REGISTRY.spec(type_name).exchange if type_name in REGISTRY else None

    def senders_of(type_name: str) -> frozenset[str] | None:
        return allowed_senders(
            type_name,
            REGISTRY.spec(type_name).exchange,
            user_of=settings.service_login,
            operator=settings.operator_user(),
        )

    def login_of(queue: str) -> str | None:
        service = services_of.get(queue)
        return settings.service_login(service) if service else None

    return deadletters.ReplayPolicy(
        TOPOLOGY,
        exchange_of,
        senders_of,
        login_of,
        max_body_bytes=settings.consumer.max_body_bytes,
    )


@dataclass
class Replayed:
    count: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (letter id, why)


async def replay(settings: Settings, *, letter_id: str | None, queue: str | None) -> Replayed:
    """Replay one letter (by id) or all (of a queue); says how many went and which stayed."""
    done = Replayed()
    if letter_id is None or not letter_id.startswith("outbox:"):
        connection = await amqp_connect(settings.amqp_url, name="orderflow-dlq")
        publisher = Publisher(connection)
        try:
            result = await deadletters.replay(
                connection,
                publisher,
                _queues(queue),
                policy=replay_policy(settings),
                message_id=letter_id,
            )
            done.count += len(result.replayed)
            done.refused += [(letter.message_id, why) for letter, why in result.refused]
        finally:
            await publisher.close()
            await connection.close()
    if queue is None and (letter_id is None or letter_id.startswith("outbox:")):
        targets: tuple[str, ...] = SERVICES
        ids: list[int] | None = None
        if letter_id is not None:
            _, service, row = letter_id.split(":", 2)
            targets, ids = (service,), [int(row)]
        for service in targets:
            async with pg_connection(settings.dsn_for(service)) as conn:
                done.count += await outbox.replay_dead(conn, ids=ids)
    return done


async def purge(settings: Settings, *, queue: str | None) -> int:
    connection = await amqp_connect(settings.amqp_url, name="orderflow-dlq")
    try:
        count = await deadletters.purge(connection, _queues(queue))
    finally:
        await connection.close()
    if queue is None:
        for service in SERVICES:
            async with pg_connection(settings.dsn_for(service)) as conn:
                count += await outbox.purge_dead(conn)
    return count
