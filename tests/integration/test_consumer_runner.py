"""The consumer runner against real PostgreSQL and RabbitMQ: ack after commit, poison and retries (docs/architecture.md, "Rules the code keeps")."""

from __future__ import annotations

import json
import uuid

import aio_pika
import asyncpg
import pytest

from libs.errors import InvalidMessageData
from libs.messages import codec
from libs.messaging.consumer import ERROR_ATTEMPTS, ERROR_CLASS, ERROR_MESSAGE, ERROR_SERVICE
from libs.pg.pool import connect
from libs.service.runner import HandlerContext
from libs.settings import ConsumerSettings
from libs.testing.waiting import wait_until

from .support import (
    COMMANDS,
    REGISTRY,
    WATCH,
    Note,
    collect,
    command_message,
    make_runner,
    note_handler,
    queue_depth,
    running_consumer,
    running_relay,
    stack,
    start_batches,
)

pytestmark = pytest.mark.integration


async def publish(s, message: aio_pika.Message) -> None:  # type: ignore[no-untyped-def]
    channel = await s.connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("test.commands")
    await exchange.publish(message, routing_key=message.type or "test.note.v1")
    await channel.close()


async def test_the_same_message_delivered_three_times_has_one_effect_and_one_set_of_outbox_rows(
    amqp_url: str, pg_dsn: str
) -> None:
    async with stack(amqp_url, pg_dsn) as s, running_consumer(s) as runner:
        message_id = str(uuid.uuid4())
        for _ in range(3):
            await publish(s, command_message(Note(key="dup", seq=1), message_id=message_id))
        await wait_until(lambda: runner.stats.processed + runner.stats.duplicates == 3)
        conn = await connect(pg_dsn)
        assert await conn.fetchval("SELECT count(*) FROM notes") == 1
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1
        rows = await conn.fetch("SELECT payload FROM outbox")
        assert len(rows) == 1
        event = codec.decode(bytes(rows[0]["payload"]), content_type=None, max_bytes=10**6)
        assert event.type == "test.noted.v1"
        assert event.causationid == message_id
        assert runner.stats.duplicates == 2
        assert await queue_depth(s.connection, COMMANDS) == 0
        await conn.close()


async def test_a_handled_command_reaches_the_broker_as_an_event_through_the_in_process_wakeup(
    amqp_url: str, pg_dsn: str
) -> None:
    async with (
        stack(amqp_url, pg_dsn) as s,
        running_relay(s, pg_dsn) as relay,
        running_consumer(s, relay=relay) as runner,
    ):
        await wait_until(lambda: relay.is_leader)
        await publish(s, command_message(Note(key="flow", seq=7)))
        [event] = await collect(s.connection, WATCH, count=1, timeout=3)
        assert event.type == "test.noted.v1"
        assert json.loads(event.body)["data"] == {"key": "flow", "seq": 7}
        assert runner.stats.processed == 1


def _raw(body: bytes, **props: object) -> aio_pika.Message:
    props.setdefault("content_type", "application/cloudevents+json")
    props.setdefault("type", "test.note.v1")
    return aio_pika.Message(body, **props)  # type: ignore[arg-type]


def _event(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/test",
        "type": "test.note.v1",
        "time": "2026-11-26T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"key": "k", "seq": 1},
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


POISON = {
    "malformed json": (_raw(b'{"specversion": "1.0", "id": '), "MalformedMessage"),
    "not an object": (_raw(b"[1, 2, 3]"), "MalformedMessage"),
    "wrong content type": (
        _raw(json.dumps(_event()).encode(), content_type="text/plain"),
        "UnsupportedContentType",
    ),
    "schema invalid": (
        _raw(json.dumps(_event(data={"key": "k", "seq": "many"})).encode()),
        "InvalidMessageData",
    ),
    "unknown type": (
        _raw(json.dumps(_event(type="test.shred_everything.v1")).encode()),
        "UnknownMessageType",
    ),
    "unknown version": (
        _raw(json.dumps(_event(type="test.note.v9")).encode()),
        "UnknownMessageVersion",
    ),
    "oversize": (
        _raw(json.dumps(_event(data={"key": "x" * 300_000, "seq": 1})).encode()),
        "MessageTooLarge",
    ),
    "missing id": (_raw(json.dumps(_event(id=None)).encode()), "MalformedMessage"),
    "id not a uuid": (
        _raw(json.dumps(_event(id="1; DROP TABLE notes")).encode()),
        "MalformedMessage",
    ),
    "wrong specversion": (_raw(json.dumps(_event(specversion="0.3")).encode()), "MalformedMessage"),
}


async def test_each_kind_of_poison_is_dead_lettered_with_its_reason_and_good_messages_still_flow(
    amqp_url: str, pg_dsn: str
) -> None:
    async with stack(amqp_url, pg_dsn) as s, running_consumer(s) as runner:
        for message, _ in POISON.values():
            await publish(s, message)
        await publish(s, command_message(Note(key="good", seq=1)))
        dead = await collect(s.connection, COMMANDS + ".dlq", count=len(POISON), timeout=10)
        assert len(dead) == len(POISON)
        by_body = {m.body: m for m in dead}
        for name, (message, error_class) in POISON.items():
            got = by_body[message.body]
            assert got.headers[ERROR_CLASS] == error_class, name
            assert got.headers[ERROR_SERVICE] == "test_svc"
            assert got.headers[ERROR_MESSAGE]
        await wait_until(lambda: runner.stats.processed == 1)
        conn = await connect(pg_dsn)
        assert [r["key"] for r in await conn.fetch("SELECT key FROM notes")] == ["good"]
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1
        await conn.close()
        assert runner.stats.dead_lettered == len(POISON)
        assert await queue_depth(s.connection, COMMANDS) == 0


async def test_a_serialization_failure_is_retried_and_applied_once(
    amqp_url: str, pg_dsn: str
) -> None:
    failures = {"left": 2}

    async def flaky(message: Note, ctx: HandlerContext) -> None:
        await note_handler(message, ctx)
        if failures["left"]:
            failures["left"] -= 1
            raise asyncpg.SerializationError("could not serialize access")

    async with stack(amqp_url, pg_dsn) as s, running_consumer(s, handler=flaky) as runner:
        await publish(s, command_message(Note(key="flaky", seq=1)))
        await wait_until(lambda: runner.stats.processed == 1)
        assert runner.stats.retries == 2
        conn = await connect(pg_dsn)
        assert await conn.fetchval("SELECT count(*) FROM notes") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
        await conn.close()


async def test_a_conflict_that_never_clears_is_dead_lettered_after_bounded_retries_with_no_partial_write(
    amqp_url: str, pg_dsn: str
) -> None:
    async def always_conflicts(message: Note, ctx: HandlerContext) -> None:
        await note_handler(message, ctx)
        raise asyncpg.DeadlockDetectedError("deadlock detected")

    settings = ConsumerSettings(conflict_retries=3, retry_base=0.001)
    async with (
        stack(amqp_url, pg_dsn) as s,
        running_consumer(s, handler=always_conflicts, settings=settings) as runner,
    ):
        await publish(s, command_message(Note(key="stuck", seq=1)))
        [dead] = await collect(s.connection, COMMANDS + ".dlq", count=1, timeout=10)
        assert dead.headers[ERROR_CLASS] == "ConcurrencyConflict"
        assert dead.headers[ERROR_ATTEMPTS] == 4
        assert runner.stats.retries == 3
        conn = await connect(pg_dsn)
        assert await conn.fetchval("SELECT count(*) FROM notes") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 0
        await conn.close()


async def test_a_domain_limit_raised_by_a_handler_is_poison_and_rolls_back(
    amqp_url: str, pg_dsn: str
) -> None:
    async def strict(message: Note, ctx: HandlerContext) -> None:
        await note_handler(message, ctx)
        if message.seq > 100:
            raise InvalidMessageData("seq must be at most 100")

    async with stack(amqp_url, pg_dsn) as s, running_consumer(s, handler=strict) as runner:
        await publish(s, command_message(Note(key="big", seq=101)))
        [dead] = await collect(s.connection, COMMANDS + ".dlq", count=1, timeout=10)
        assert dead.headers[ERROR_CLASS] == "InvalidMessageData"
        assert runner.stats.retries == 0
        conn = await connect(pg_dsn)
        assert await conn.fetchval("SELECT count(*) FROM notes") == 0
        await conn.close()


async def test_a_message_that_crashes_its_consumer_every_time_ends_in_the_dead_letter_queue(
    amqp_url: str, pg_dsn: str
) -> None:
    """Quorum queues count redeliveries; ``x-delivery-limit`` ends a crash loop."""
    async with stack(amqp_url, pg_dsn) as s:
        await publish(s, command_message(Note(key="crashy", seq=1)))
        channel = await s.connection.channel()
        queue = await channel.get_queue(COMMANDS)
        for _ in range(4):  # delivery_limit=3: the 4th requeue dead-letters it
            message = await queue.get(fail=False, timeout=5)
            if message is None:
                break
            await message.nack(requeue=True)
        await wait_until(lambda: queue_depth(s.connection, COMMANDS + ".dlq"), timeout=5)
        assert await queue_depth(s.connection, COMMANDS) == 0
        await channel.close()
        assert REGISTRY.spec("test.note.v1").exchange == "test.commands"


async def test_a_batch_with_duplicates_and_poison_applies_each_message_once_and_settles_all(
    amqp_url: str, pg_dsn: str
) -> None:
    async with stack(amqp_url, pg_dsn) as s:
        # queue everything first, so that the consumer takes it in batches
        repeated = str(uuid.uuid4())
        for n in range(60):
            await publish(s, command_message(Note(key="b", seq=n)))
        for _ in range(3):
            await publish(s, command_message(Note(key="b", seq=1000), message_id=repeated))
        await publish(s, _raw(b"{oops"))
        runner = make_runner(s)
        batches: list[int] = []

        async def recording(deliveries: list) -> None:  # type: ignore[type-arg]
            batches.append(len(deliveries))
            await runner.process_batch(deliveries)

        consumer = await start_batches(s, runner, recording)
        await wait_until(lambda: runner.stats.processed + runner.stats.duplicates == 63)
        await consumer.stop(grace=5)
        assert max(batches) > 1  # really batched
        conn = await connect(pg_dsn)
        assert await conn.fetchval("SELECT count(*) FROM notes") == 61
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 61
        assert runner.stats.duplicates == 2
        assert runner.stats.dead_lettered == 1
        await conn.close()
        assert await queue_depth(s.connection, COMMANDS) == 0  # every delivery acked
        [dead] = await collect(s.connection, COMMANDS + ".dlq", count=1, timeout=5)
        assert dead.body == b"{oops"


async def test_a_batch_whose_transaction_fails_falls_back_to_one_by_one(
    amqp_url: str, pg_dsn: str
) -> None:
    async def strict(message: Note, ctx: HandlerContext) -> None:
        await note_handler(message, ctx)
        if message.seq == 13:
            raise InvalidMessageData("13 is unlucky")

    async with stack(amqp_url, pg_dsn) as s:
        for n in range(30):
            await publish(s, command_message(Note(key="f", seq=n)))
        runner = make_runner(s, handler=strict)
        consumer = await start_batches(s, runner)
        await wait_until(lambda: runner.stats.processed + runner.stats.dead_lettered == 30)
        await consumer.stop(grace=5)
        conn = await connect(pg_dsn)
        assert await conn.fetchval("SELECT count(*) FROM notes") == 29
        assert await conn.fetchval("SELECT count(*) FROM notes WHERE seq = 13") == 0
        await conn.close()
        assert await queue_depth(s.connection, COMMANDS) == 0
        [dead] = await collect(s.connection, COMMANDS + ".dlq", count=1, timeout=5)
        assert dead.headers[ERROR_CLASS] == "InvalidMessageData"


async def test_a_refusal_a_stranger_makes_fail_costs_its_message_not_the_batch(
    amqp_url: str, pg_dsn: str
) -> None:
    """Data that fails its schema goes to the type's refuser; one that cannot answer (garbage
    naming a live order, say) is undone in its own savepoint and dead-lettered after the commit,
    with its inbox row gone (so a replay is processed), while the rest of the batch commits."""

    async def refuse(envelope, error, ctx: HandlerContext) -> bool:  # type: ignore[no-untyped-def]
        if envelope.data.get("key") != "answer":
            await ctx.conn.execute("INSERT INTO notes (key, seq) VALUES ('undone', 0)")
            return False
        await ctx.conn.execute("INSERT INTO notes (key, seq) VALUES ('answered', -1)")
        return True

    def invalid(key: str) -> aio_pika.Message:
        message = command_message(Note(key=key, seq=1))
        doc = json.loads(message.body)
        doc["data"]["seq"] = "not a number"
        message.body = json.dumps(doc).encode()
        return message

    async with stack(amqp_url, pg_dsn) as s:
        for n in range(20):
            await publish(s, command_message(Note(key="r", seq=n)))
        await publish(s, invalid("answer"))
        garbage = invalid("garbage")
        await publish(s, garbage)
        await publish(s, garbage)  # a copy in the same batch: absorbed, not refused again
        runner = make_runner(s, refusals={Note.TYPE: refuse})
        batches: list[int] = []

        async def recording(deliveries: list) -> None:  # type: ignore[type-arg]
            batches.append(len(deliveries))
            await runner.process_batch(deliveries)

        consumer = await start_batches(s, runner, recording)
        await wait_until(lambda: runner.stats.processed + runner.stats.dead_lettered == 22)
        await consumer.stop(grace=5)
        conn = await connect(pg_dsn)
        assert await conn.fetchval("SELECT count(*) FROM notes WHERE key = 'r'") == 20
        assert await conn.fetchval("SELECT count(*) FROM notes WHERE key = 'answered'") == 1
        assert await conn.fetchval("SELECT count(*) FROM notes WHERE key = 'undone'") == 0
        # batched: the messages shared transactions (a fallback gives each its own)
        rows = "SELECT count(DISTINCT xmin::text) FROM notes WHERE key = 'r'"
        assert await conn.fetchval(rows) <= len(batches)
        assert max(batches) > 1
        assert not await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE message_id = $1::uuid", garbage.message_id
        )
        await conn.close()
        assert await queue_depth(s.connection, COMMANDS) == 0
        [dead] = await collect(s.connection, COMMANDS + ".dlq", count=1, timeout=5)
        assert dead.message_id == garbage.message_id
        assert dead.headers[ERROR_CLASS] == "InvalidMessageData"
        assert await queue_depth(s.connection, COMMANDS + ".dlq") == 0  # one dead letter only
        assert runner.stats.duplicates >= 1
