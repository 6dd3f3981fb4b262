"""Dead-letter queues: list, show, replay, purge — without losing anything on the way.

Listing reads each ``<queue>.dlq`` with ``basic.get`` and no ack, then closes the channel, which
returns every message to its queue: a look changes nothing. Replay publishes a copy with the same
body and message id, waits for the broker's confirm, and only then acks the dead letter. A crash
in between leaves the message in both places; the consumer's inbox makes the second copy a no-op.

Where a replay goes is decided by the :class:`ReplayPolicy` — the topology says which exchange and
routing key the letter's queue consumes the letter's type from — never by the letter's headers,
which a sender could have written. A letter whose original sender (the broker-verified
``user_id``, recorded by the consumer that dead-lettered it) is not allowed to send its type is
never replayed: replay must not launder an impostor's message through the operator's account.
Letters that cannot be replayed stay where they are, with the reason reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from libs.errors import PoisonMessage
from libs.messages import codec
from libs.messages.envelope import utcnow
from libs.messaging.consumer import (
    ERROR_ATTEMPTS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_SERVICE,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    ORIGINAL_SENDER,
)
from libs.messaging.publisher import Outgoing, Publisher
from libs.messaging.topology import DLQ_SUFFIX, Topology, topic_matches

EDITED_FROM = "x-orderflow-edited-from"
"""On a corrected copy of a dead letter: the dead letter's message id."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    queue: str
    message_id: str
    type: str
    error_class: str
    error: str
    service: str
    attempts: int
    exchange: str
    routing_key: str
    dead_at: datetime | None
    headers: dict[str, Any]
    body: bytes
    user_id: str | None = None  # of the letter itself: the broker-verified publisher
    recorded_sender: str | None = None  # what the dead-lettering consumer recorded


@dataclass(frozen=True, slots=True)
class ReplayPolicy:
    """Where dead letters may be replayed to, from the topology and the message types.

    ``exchange_of`` names the exchange a message type travels on (None: unknown type);
    ``senders_of`` the broker users the type is accepted from (None: anyone); ``login_of`` the
    broker user of the service that consumes a queue (the only one that writes its dead letters
    with a recorded sender).
    """

    topology: Topology
    exchange_of: Callable[[str], str | None]
    senders_of: Callable[[str], frozenset[str] | None]
    login_of: Callable[[str], str | None]
    max_body_bytes: int = 256 * 1024

    def destination(self, letter: DeadLetter) -> tuple[str, str] | str:
        """(exchange, routing key) to replay to, or the reason the letter cannot be replayed.

        The type is the one in the body, which is what the consumer acts on (not the AMQP
        ``type`` property, which must agree with it).
        """
        if not letter.queue.endswith(DLQ_SUFFIX):
            return f"{letter.queue} is not a dead-letter queue"
        try:
            spec = self.topology.queue(letter.queue.removesuffix(DLQ_SUFFIX))
        except KeyError:
            return f"no queue of the topology dead-letters to {letter.queue}"
        try:
            type_name = codec.decode(
                letter.body, content_type=None, max_bytes=self.max_body_bytes
            ).type
        except PoisonMessage as exc:
            return f"its body is not a readable event ({exc})"
        if letter.type and letter.type != type_name:
            return f"its AMQP type {letter.type[:80]!r} is not its event's type {type_name!r}"
        exchange = self.exchange_of(type_name)
        if exchange is None:
            return f"type {type_name[:80]!r} is not a known message type"
        if not any(
            b.exchange == exchange and topic_matches(b.routing_key, type_name)
            for b in spec.bindings
        ):
            return f"{spec.name} does not consume {type_name} from {exchange}"
        allowed = self.senders_of(type_name)
        sender = self.sender_of(letter, spec.name)
        if allowed is not None and sender not in allowed:
            return (
                f"{type_name} was sent by {sender or 'an unnamed user'!r}, who may not send it: "
                "an impostor's message is never replayed"
            )
        return exchange, type_name

    def sender_of(self, letter: DeadLetter, queue: str) -> str | None:
        """Who sent the original: as recorded by the consumer of ``queue`` when that consumer
        published the letter (its user_id says so); else the letter's own user_id, which the
        broker keeps when it dead-letters a message itself. A recorded sender in any other
        letter is the sender's own header, and worth nothing."""
        if letter.user_id is not None and letter.user_id == self.login_of(queue):
            return letter.recorded_sender
        return letter.user_id


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _origin(message: AbstractIncomingMessage) -> tuple[str, str]:
    headers: dict[str, Any] = dict(message.headers or {})
    exchange = _text(headers.get(ORIGINAL_EXCHANGE))
    routing_key = _text(headers.get(ORIGINAL_ROUTING_KEY))
    if exchange:
        return exchange, routing_key
    death = _first_death(headers)
    if death is not None:
        keys = death.get("routing-keys")
        return _text(death.get("exchange")), _text(
            keys[0] if isinstance(keys, list) and keys else ""
        )
    return "", message.routing_key or ""


def _first_death(headers: dict[str, Any]) -> dict[str, Any] | None:
    """The broker's own record of the latest dead-lettering, if any."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return None


def _describe(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    exchange, routing_key = _origin(message)
    death = _first_death(headers)
    reason = ""
    if death is not None:
        reason = f"broker: {_text(death.get('reason'))} ({_text(death.get('count'))} times)"
    attempts = headers.get(ERROR_ATTEMPTS, 0)
    return DeadLetter(
        queue=queue,
        message_id=message.message_id or "",
        type=message.type or "",
        error_class=_text(headers.get(ERROR_CLASS)) or ("DeliveryLimitExceeded" if reason else ""),
        error=_text(headers.get(ERROR_MESSAGE)) or reason,
        service=_text(headers.get(ERROR_SERVICE)),
        attempts=int(attempts) if isinstance(attempts, int) else 0,
        exchange=exchange,
        routing_key=routing_key,
        dead_at=message.timestamp,
        headers=headers,
        body=message.body,
        user_id=message.user_id,
        recorded_sender=_text(headers[ORIGINAL_SENDER]) if ORIGINAL_SENDER in headers else None,
    )


async def list_dead_letters(
    connection: AbstractRobustConnection,
    queues: list[str],
    *,
    limit: int = 1000,
    idle: float = 0.5,
) -> list[DeadLetter]:
    """Up to ``limit`` letters of these queues, oldest first, each left where it is.

    A queue's letters are taken in one stream (a consumer with a prefetch as large as what is
    wanted, not one ``basic.get`` round trip each) and go back when the channel closes; the read
    ends once the queue's depth at the start was seen, or nothing came for ``idle`` seconds."""
    found: list[DeadLetter] = []
    for queue_name in queues:
        if len(found) >= limit:
            break
        found += await _peek(connection, queue_name, limit - len(found), idle)
    return found


async def _peek(
    connection: AbstractRobustConnection, queue_name: str, limit: int, idle: float
) -> list[DeadLetter]:
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(queue_name, ensure=True)
        wanted = min(limit, int(queue.declaration_result.message_count or 0))
        if wanted == 0:
            return []
        await channel.set_qos(prefetch_count=min(wanted, 65535))
        got: list[DeadLetter] = []
        arrived = asyncio.Event()

        async def take(message: AbstractIncomingMessage) -> None:
            if len(got) < wanted:
                got.append(_describe(queue_name, message))
            arrived.set()

        await queue.consume(take, no_ack=False)
        while len(got) < wanted:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), idle)
            except TimeoutError:
                break
        return got
    finally:
        await channel.close()  # unacked messages go back to their queue


@dataclass
class ReplayResult:
    replayed: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)


Select = Callable[[DeadLetter], bool]


async def _each(
    connection: AbstractRobustConnection,
    queues: list[str],
    select: Select | None,
    handle: Callable[[DeadLetter, AbstractIncomingMessage], Awaitable[None]],
) -> None:
    """Take each letter of these queues once (as deep as each was at the start) and ``handle``
    those ``select`` picks; ``handle`` acks what it dealt with, the rest go back to their queue
    when the channel closes."""
    for queue_name in queues:
        channel = await connection.channel()
        try:
            queue = await channel.get_queue(queue_name, ensure=True)
            depth = queue.declaration_result.message_count or 0
            for _ in range(depth):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letter = _describe(queue_name, message)
                if select is None or select(letter):
                    await handle(letter, message)
        finally:
            await channel.close()


async def replay(
    connection: AbstractRobustConnection,
    publisher: Publisher,
    queues: list[str],
    *,
    policy: ReplayPolicy,
    select: Select | None = None,
) -> ReplayResult:
    """Re-publish the dead letters ``select`` picks (all when None) where the policy says; what
    it refuses stays in its queue."""
    result = ReplayResult()

    async def send(letter: DeadLetter, message: AbstractIncomingMessage) -> None:
        destination = policy.destination(letter)
        if isinstance(destination, str):
            result.refused.append((letter, destination))
            return
        exchange, routing_key = destination
        await publisher.publish(
            Outgoing.copy_of(
                message,
                exchange=exchange,
                routing_key=routing_key,
                headers=_replay_headers(letter),
            )
        )
        await message.ack()  # only once the copy is confirmed
        result.replayed.append(letter)

    await _each(connection, queues, select, send)
    return result


async def discard(
    connection: AbstractRobustConnection, queues: list[str], *, select: Select
) -> list[DeadLetter]:
    """Delete for good the dead letters ``select`` picks; those deleted."""
    gone: list[DeadLetter] = []

    async def drop(letter: DeadLetter, message: AbstractIncomingMessage) -> None:
        await message.ack()
        gone.append(letter)

    await _each(connection, queues, select, drop)
    return gone


def _replay_headers(letter: DeadLetter, **extra: str) -> dict[str, Any]:
    """The letter's own headers, without what dead-lettering added, marked as replayed."""
    headers = {
        k: v
        for k, v in letter.headers.items()
        if not k.startswith("x-orderflow-") and k != "x-death"
    }
    headers["x-orderflow-replayed-at"] = utcnow().isoformat()
    headers.update(extra)
    return headers


_EDITED = uuid.UUID("0f5d3c2e-8a41-4f7b-9e36-5b0d8c1a7e42")


def edited_id(message_id: str) -> str:
    """The id of a dead letter's corrected copy: the same for every attempt at sending it, so
    the consumer's inbox applies it once even if the operator sends it twice."""
    return str(uuid.uuid5(_EDITED, f"edited:{message_id}"))


async def edit_and_replay(
    connection: AbstractRobustConnection,
    publisher: Publisher,
    queue_name: str,
    *,
    policy: ReplayPolicy,
    message_id: str,
    body: bytes,
) -> tuple[DeadLetter, str] | str:
    """Send a corrected body in place of one dead letter: a new message (id from
    :func:`edited_id`, ``causationid`` the dead letter's id) where the policy says the
    corrected type goes, then drop the dead letter. (the letter, the new id), or why not — then
    nothing was sent and the letter stays."""
    outcome: list[tuple[DeadLetter, str] | str] = []

    async def correct(letter: DeadLetter, message: AbstractIncomingMessage) -> None:
        if outcome:  # a second copy with the same id stays where it is
            return
        try:
            envelope = codec.decode(body, content_type=None, max_bytes=policy.max_body_bytes)
        except PoisonMessage as exc:
            outcome.append(f"the corrected body is not a readable event: {exc}")
            return
        new_id = edited_id(message_id)
        corrected = dataclasses.replace(envelope, id=new_id, causationid=message_id)
        new_body = codec.encode(corrected)
        destination = policy.destination(
            dataclasses.replace(letter, body=new_body, type=corrected.type)
        )
        if isinstance(destination, str):
            outcome.append(destination)
            return
        exchange, routing_key = destination
        await publisher.publish(
            Outgoing(
                exchange=exchange,
                routing_key=routing_key,
                body=new_body,
                message_id=new_id,
                type=corrected.type,
                timestamp=utcnow(),
                correlation_id=corrected.correlationid,
                headers=_replay_headers(letter, **{EDITED_FROM: message_id}),
            )
        )
        await message.ack()  # only once the corrected copy is confirmed
        outcome.append((letter, new_id))

    await _each(connection, [queue_name], lambda d: d.message_id == message_id, correct)
    if not outcome:
        return f"no dead letter {message_id} in {queue_name} (replayed or purged already?)"
    return outcome[0]


async def purge(connection: AbstractRobustConnection, queues: list[str]) -> int:
    purged = 0
    channel = await connection.channel()
    try:
        for queue_name in queues:
            queue = await channel.get_queue(queue_name, ensure=True)
            result = await queue.purge()
            purged += int(getattr(result, "message_count", 0) or 0)
    finally:
        await channel.close()
    return purged


async def depth(connection: AbstractRobustConnection, queue_name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    finally:
        await channel.close()
