"""A small service made of the toolkit's parts, for the integration tests of ``libs``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from libs.errors import ConfirmUnknown, PublishError, PublishNacked
from libs.faults import NO_FAULTS, Faults
from libs.messages.registry import Command, Event, MessageRegistry
from libs.messaging.connection import connect as amqp_connect
from libs.messaging.consumer import DeadLetterPublisher, QueueConsumer
from libs.messaging.publisher import Outgoing, Publisher
from libs.messaging.topology import Binding, QueueSpec, Topology, declare
from libs.outbox.relay import OutboxRelay, Wakeup
from libs.outbox.unit_of_work import unit_of_work
from libs.pg.pool import Conn, connect, create_pool
from libs.service.runner import HandlerContext, MessageRunner
from libs.settings import ConsumerSettings, RelaySettings


class Note(Command):
    TYPE = "test.note.v1"
    key: str
    seq: int


class Noted(Event):
    TYPE = "test.noted.v1"
    key: str
    seq: int


REGISTRY = MessageRegistry(Note, Noted)
COMMANDS = "test_svc.commands"
WATCH = "watch.events"
TOPOLOGY = Topology(
    exchanges=("test.commands", "test.events"),
    queues=(
        QueueSpec(COMMANDS, (Binding("test.commands", "#"),), delivery_limit=3),
        QueueSpec(WATCH, (Binding("test.events", "#"),)),
    ),
)
NOTES_DDL = """CREATE TABLE IF NOT EXISTS notes (
    key text NOT NULL, seq integer NOT NULL, PRIMARY KEY (key, seq))"""

FAST_RELAY = RelaySettings(sweep_interval=60.0, standby_interval=0.2, retry_base=0.05)


async def note_handler(message: Note, ctx: HandlerContext) -> None:
    await ctx.conn.execute("INSERT INTO notes (key, seq) VALUES ($1, $2)", message.key, message.seq)
    ctx.send(
        Noted(key=message.key, seq=message.seq), aggregate_type="note", aggregate_id=message.key
    )


async def write_events(conn: Conn, events: list[Noted], *, notify: bool = True) -> list[str]:
    """Commit outbox rows the way a handler would; returns their message ids."""
    ids = []
    async with unit_of_work(conn, wake=notify) as uow:
        for event in events:
            envelope = REGISTRY.envelope(event, source="/test", subject=event.key)
            uow.add(envelope, exchange="test.events", aggregate_type="note", aggregate_id=event.key)
            ids.append(envelope.id)
    return ids


async def collect(
    connection: AbstractRobustConnection, queue: str, *, count: int, timeout: float = 10.0
) -> list[AbstractIncomingMessage]:
    """Take (and ack) ``count`` messages from ``queue``, failing after ``timeout`` seconds."""
    channel = await connection.channel()
    q = await channel.get_queue(queue)
    got: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = await q.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.005)
            continue
        got.append(message)
    await channel.close()
    return got


async def queue_depth(connection: AbstractRobustConnection, queue: str) -> int:
    channel = await connection.channel()
    q = await channel.declare_queue(queue, passive=True)
    depth = q.declaration_result.message_count
    await channel.close()
    return int(depth or 0)


@dataclass
class Stack:
    connection: AbstractRobustConnection
    publisher: Publisher
    pool: Any


@asynccontextmanager
async def stack(amqp_url: str, pg_dsn: str) -> AsyncIterator[Stack]:
    connection = await amqp_connect(amqp_url, name="test")
    channel = await connection.channel()
    await declare(channel, TOPOLOGY)
    conn = await connect(pg_dsn)
    await conn.execute(NOTES_DDL)
    await conn.close()
    pool = await create_pool(pg_dsn, max_size=6)
    publisher = Publisher(connection)
    try:
        yield Stack(connection, publisher, pool)
    finally:
        await publisher.close()
        await pool.close()
        await channel.close()
        await connection.close()


@asynccontextmanager
async def running_relay(
    s: Stack,
    pg_dsn: str,
    *,
    name: str = "test",
    settings: RelaySettings = FAST_RELAY,
    faults: Faults = NO_FAULTS,
) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(
        name=name, dsn=pg_dsn, publisher=s.publisher, settings=settings, faults=faults
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        with suppress(BaseException):
            await asyncio.wait_for(task, 10)


def make_runner(
    s: Stack,
    *,
    relay: OutboxRelay | None = None,
    settings: ConsumerSettings | None = None,
    handler: Any = note_handler,
    faults: Faults = NO_FAULTS,
    refusals: Any = None,
) -> MessageRunner:
    return MessageRunner(
        consumer="test_svc",
        queue=COMMANDS,
        source="/orderflow/test_svc",
        pool=s.pool,
        registry=REGISTRY,
        handlers={Note: handler},
        dead_letters=DeadLetterPublisher(s.publisher, service="test_svc"),
        wakeup=Wakeup(relay),
        settings=settings or ConsumerSettings(retry_base=0.01),
        faults=faults,
        refusals=refusals,
    )


@asynccontextmanager
async def running_consumer(
    s: Stack,
    *,
    relay: OutboxRelay | None = None,
    settings: ConsumerSettings | None = None,
    handler: Any = note_handler,
    faults: Faults = NO_FAULTS,
) -> AsyncIterator[MessageRunner]:
    runner = make_runner(s, relay=relay, settings=settings, handler=handler, faults=faults)
    consumer = QueueConsumer(s.connection, queue=COMMANDS, prefetch=8, process=runner)
    await consumer.start()
    try:
        yield runner
    finally:
        runner.stop()
        await consumer.stop(grace=5)


def command_message(note: Note, *, message_id: str | None = None) -> aio_pika.Message:
    """A Note command exactly as the relay would put it on the wire."""
    from libs.messages import codec

    envelope = REGISTRY.envelope(note, source="/test", subject=note.key, message_id=message_id)
    return aio_pika.Message(
        codec.encode(envelope),
        content_type="application/cloudevents+json",
        message_id=envelope.id,
        type=envelope.type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def start_batches(
    s: Stack, runner: MessageRunner, process_batch: Any = None
) -> QueueConsumer:
    """A started batch consumer of COMMANDS (prefetch 128) handing its batches to
    ``process_batch`` (default: the runner's own)."""
    consumer = QueueConsumer(
        s.connection,
        queue=COMMANDS,
        prefetch=128,
        process=runner,
        process_batch=process_batch or runner.process_batch,
    )
    await consumer.start()
    return consumer


@dataclass
class FlakyPublisher:
    """The real publisher, but ``victim`` fails the first time it is published (``mode``)."""

    real: Publisher
    victim: str
    mode: str  # "drop-nack" | "send-nack" | "send-unknown"
    waves: list[list[str]] = field(default_factory=list)
    failed_once: bool = False

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        self.waves.append([m.message_id for m in messages])
        hit = not self.failed_once and any(m.message_id == self.victim for m in messages)
        if not hit:
            return await self.real.publish_many(messages)
        self.failed_once = True
        send = [m for m in messages if m.message_id != self.victim or self.mode != "drop-nack"]
        sent = dict(
            zip([m.message_id for m in send], await self.real.publish_many(send), strict=True)
        )
        outcomes: list[PublishError | None] = []
        for m in messages:
            if m.message_id != self.victim:
                outcomes.append(sent[m.message_id])
            elif self.mode == "send-unknown":
                outcomes.append(ConfirmUnknown("no confirm: injected by the test"))
            else:
                outcomes.append(PublishNacked("nacked by the broker: injected by the test"))
        return outcomes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
