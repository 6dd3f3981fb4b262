"""`orderflow dlq`: dead letters of the broker queues and of the relays, in one list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aio_pika.abc import AbstractRobustConnection

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
from orderflow.status import Databases
from orderflow.system import SERVICES


class UnknownQueue(OrderflowError):
    pass


class NoSuchLetter(OrderflowError):
    pass


class NotEditable(OrderflowError):
    pass


RELAY_GAVE_UP = "RelayGaveUp"


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


def _letter(d: deadletters.DeadLetter) -> Letter:
    return Letter(
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


def _queues(queue: str | None) -> list[str]:
    all_dlqs = TOPOLOGY.dead_letter_queues()
    if queue is None:
        return all_dlqs
    name = queue if queue.endswith(".dlq") else queue + ".dlq"
    if name not in all_dlqs:
        raise UnknownQueue(f"no dead-letter queue {name}; there are: {', '.join(all_dlqs)}")
    return [name]


async def list_letters(
    settings: Settings,
    *,
    queue: str | None = None,
    limit: int = 1000,
    amqp: AbstractRobustConnection | None = None,
    databases: Databases | None = None,
) -> list[Letter]:
    """Dead letters of the broker's queues (of one, or all) and, for all, of the relays; with
    the caller's broker connection and databases, if given."""
    letters: list[Letter] = []
    connection = amqp or await amqp_connect(settings.amqp_url, name="orderflow-dlq")
    open_db = databases or (lambda service: pg_connection(settings.dsn_for(service)))
    try:
        for d in await deadletters.list_dead_letters(connection, _queues(queue), limit=limit):
            letters.append(_letter(d))
    finally:
        if amqp is None:
            await connection.close()
    if queue is None:
        for service in SERVICES:
            async with open_db(service) as conn:
                for row in await outbox.list_dead(conn, limit=limit):
                    letters.append(
                        Letter(
                            f"outbox:{service}:{row.id}",
                            f"{service} outbox",
                            row.message_type,
                            RELAY_GAVE_UP,
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


@asynccontextmanager
async def _publishing(
    settings: Settings,
) -> AsyncIterator[tuple[AbstractRobustConnection, Publisher]]:
    """The operator's broker connection and a confirming publisher on it, closed after."""
    connection = await amqp_connect(settings.amqp_url, name="orderflow-dlq")
    publisher = Publisher(connection)
    try:
        yield connection, publisher
    finally:
        await publisher.close()
        await connection.close()


@dataclass
class Replayed:
    count: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (letter id, why)


@dataclass(frozen=True)
class Selection:
    """Which dead letters an action takes: some by id, a group (error class and type), or all
    (of ``queue``, or everywhere)."""

    ids: frozenset[str] | None = None
    group: tuple[str, str] | None = None
    queue: str | None = None

    def picks(self, letter_id: str, error_class: str, type_name: str) -> bool:
        if self.ids is not None and letter_id not in self.ids:
            return False
        return self.group is None or self.group == (error_class, type_name)


def group_of(letter: Letter) -> tuple[str, str]:
    return letter.error_class or "(none)", letter.type or "(no type)"


def groups(letters: list[Letter]) -> list[tuple[tuple[str, str], list[Letter]]]:
    """Letters by (error class, type), the largest group first."""
    by: dict[tuple[str, str], list[Letter]] = {}
    for letter in letters:
        by.setdefault(group_of(letter), []).append(letter)
    return sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))


async def replay(
    settings: Settings,
    *,
    letter_id: str | None = None,
    queue: str | None = None,
    selection: Selection | None = None,
) -> Replayed:
    """Replay one letter (by id), a selection, or all (of a queue); says how many went and
    which stayed."""
    chosen = selection or Selection(
        ids=frozenset({letter_id}) if letter_id is not None else None, queue=queue
    )
    ids = chosen.ids
    done = Replayed()
    if ids is None or any(not i.startswith("outbox:") for i in ids):
        async with _publishing(settings) as (connection, publisher):
            result = await deadletters.replay(
                connection,
                publisher,
                _queues(chosen.queue),
                policy=replay_policy(settings),
                select=lambda d: chosen.picks(d.message_id, *group_of(_letter(d))),
            )
        done.count += len(result.replayed)
        done.refused += [(letter.message_id, why) for letter, why in result.refused]
    if chosen.queue is None:
        for service in SERVICES:
            async with pg_connection(settings.dsn_for(service)) as conn:
                ids_here = await _relay_ids(conn, service, chosen)
                if ids_here:
                    done.count += await outbox.replay_dead(conn, ids=ids_here)
    return done


async def edit_and_replay(settings: Settings, letter_id: str, body: bytes) -> str:
    """Send a corrected body in place of a broker dead letter; the new message's id (its
    causation is the dead letter). Relay dead letters are replayed as they are, not edited."""
    if letter_id.startswith("outbox:"):
        raise NotEditable(
            f"{letter_id} is a message its relay gave up on: replay it as it is once the broker "
            "takes it; its body was written by the service and is not edited by hand"
        )
    letters = [x for x in await list_letters(settings) if x.id == letter_id]
    if not letters:
        raise NoSuchLetter(f"no dead letter {letter_id} (replayed or purged already?)")
    async with _publishing(settings) as (connection, publisher):
        outcome = await deadletters.edit_and_replay(
            connection,
            publisher,
            letters[0].where,
            policy=replay_policy(settings),
            message_id=letter_id,
            body=body,
        )
    if isinstance(outcome, str):
        raise NotEditable(f"not sent: {outcome}")
    return outcome[1]


async def purge(
    settings: Settings, *, queue: str | None = None, selection: Selection | None = None
) -> int:
    """Delete dead letters for good: all (of a queue), or a selection."""
    if selection is not None and (selection.ids is not None or selection.group is not None):
        return await _purge_selected(settings, selection)
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


async def _relay_ids(conn: Any, service: str, chosen: Selection) -> list[int]:
    """The dead outbox rows of one service that a selection picks."""
    dead = await outbox.list_dead(conn, limit=100_000)
    return [
        r.id
        for r in dead
        if chosen.picks(f"outbox:{service}:{r.id}", RELAY_GAVE_UP, r.message_type)
    ]


async def _purge_selected(settings: Settings, chosen: Selection) -> int:
    connection = await amqp_connect(settings.amqp_url, name="orderflow-dlq")
    try:
        gone = await deadletters.discard(
            connection,
            _queues(chosen.queue),
            select=lambda d: chosen.picks(d.message_id, *group_of(_letter(d))),
        )
    finally:
        await connection.close()
    count = len(gone)
    if chosen.queue is None:
        for service in SERVICES:
            async with pg_connection(settings.dsn_for(service)) as conn:
                ids = await _relay_ids(conn, service, chosen)
                if ids:
                    count += await outbox.purge_dead(conn, ids=ids)
    return count
