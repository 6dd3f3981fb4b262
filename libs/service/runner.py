"""One message = one transaction = one ack.

For each delivery the runner:

1. reads it (size, content type, bounded JSON, CloudEvent, known type and version, the sender's
   broker-verified ``user_id`` against the type's owners, schema); anything wrong — including
   exceptions nobody predicted, such as a ``RecursionError`` or header bytes that are not text —
   is *poison*: dead-lettered at once with the reason, never retried, and the consumer carries
   on. A type may have a *refuser* instead: data that fails its schema is then answered (for
   example with a rejection event) in the same kind of transaction as a handler's, and acked;
2. opens one transaction: inbox insert (``ON CONFLICT DO NOTHING``; a duplicate commits nothing
   else), the handler's state changes, the handler's outbox rows — commit;
3. wakes the relay, then acks. An ack is never sent before the commit.

Failures inside step 2 are translated (``libs.pg.errors``): a serialization failure or deadlock is
retried with backoff up to ``conflict_retries`` times; an unreachable database is retried for up to
``unavailable_window`` seconds; any other exception (a bug, a constraint) is retried twice. What
is still failing is dead-lettered with its reason and attempt count. If the dead-letter publish
itself is not confirmed, the delivery is requeued, never dropped. A crash at any point leaves the
delivery unacked: the broker redelivers it, and quorum queues' ``x-delivery-limit`` ends a loop
of crashes in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode

from libs import backoff
from libs.aggregate import AggregateRoot
from libs.errors import (
    ConcurrencyConflict,
    ImpostorMessage,
    InfrastructureUnavailable,
    InvalidMessageData,
    MalformedMessage,
    PoisonMessage,
    UnknownMessageType,
    UnsupportedContentType,
)
from libs.faults import NO_FAULTS, Faults
from libs.inbox import store as inbox
from libs.messages import codec
from libs.messages.envelope import Envelope
from libs.messages.registry import Message, MessageRegistry
from libs.messaging.consumer import DeadLetterPublisher, Delivery, delivery_count, settle
from libs.observability.logging import get_logger
from libs.observability.messaging import process_attributes
from libs.observability.tracing import context_from_headers, tracer
from libs.outbox.relay import Wakeup
from libs.outbox.store import OutboxWriter
from libs.outbox.unit_of_work import unit_of_work
from libs.pg.errors import translate
from libs.pg.pool import Conn
from libs.settings import ConsumerSettings

log = get_logger(__name__)
_tracer = tracer("orderflow.consumer")
OTHER_ERROR_RETRIES = 2
_PLAIN_ENCODINGS = frozenset({"identity", "utf-8", "utf8"})


@dataclass(slots=True)
class HandlerContext:
    """What a handler may touch: its transaction's connection and its outbox."""

    conn: Conn
    envelope: Envelope
    registry: MessageRegistry
    source: str
    outbox: OutboxWriter = field(default_factory=OutboxWriter)
    aggregates: list[AggregateRoot] = field(default_factory=list)

    def collect(self, aggregate: AggregateRoot) -> None:
        """Track an aggregate: its recorded events go to the outbox when the handler returns."""
        if aggregate not in self.aggregates:
            self.aggregates.append(aggregate)

    def write_collected(self) -> None:
        for aggregate in self.aggregates:
            for event in aggregate.pull_events():
                self.send(
                    event,
                    aggregate_type=aggregate.aggregate_type,
                    aggregate_id=aggregate.aggregate_id,
                    subject=aggregate.aggregate_id,
                )

    def send(
        self,
        message: Message,
        *,
        aggregate_type: str,
        aggregate_id: str,
        subject: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue a command or event in the outbox, caused by the message being handled."""
        spec = self.registry.spec_of(message)
        envelope = self.registry.envelope(
            message,
            source=self.source,
            subject=subject if subject is not None else self.envelope.subject,
            correlation_id=self.envelope.correlationid or self.envelope.id,
            causation_id=self.envelope.id,
            message_id=message_id,
        )
        self.outbox.add(
            envelope,
            exchange=spec.exchange,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
        )
        return envelope.id


Handler = Callable[[Any, HandlerContext], Awaitable[None]]
Refuser = Callable[[Envelope, PoisonMessage, HandlerContext], Awaitable[bool]]
"""Answers a message whose data its type refuses; True once answered, False to dead-letter."""


class _Refusal:
    """A refusal runs like a handler (same transaction, inbox row, outbox, ack); when the refuser
    cannot answer, the original error dead-letters the message as if there were no refuser.
    Refusals answer strangers' data, so a batch runs each in a savepoint of its own: one that a
    stranger makes fail (garbage naming a live order) costs that message, not the batch."""

    def __init__(self, refuse: Refuser, error: PoisonMessage) -> None:
        self._refuse, self._error = refuse, error
        self.__qualname__ = f"refusal:{getattr(refuse, '__qualname__', 'refuse')}"

    async def __call__(self, _: Any, ctx: HandlerContext) -> None:
        if not await self._refuse(ctx.envelope, self._error, ctx):
            raise self._error


@dataclass(slots=True)
class RunnerStats:
    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    requeued: int = 0


class MessageRunner:
    def __init__(
        self,
        *,
        consumer: str,
        queue: str,
        source: str,
        pool: asyncpg.Pool[Any],
        registry: MessageRegistry,
        handlers: Mapping[type[Message], Handler],
        dead_letters: DeadLetterPublisher,
        wakeup: Wakeup,
        settings: ConsumerSettings | None = None,
        faults: Faults = NO_FAULTS,
        senders: Mapping[str, frozenset[str]] | None = None,
        refusals: Mapping[str, Refuser] | None = None,
    ) -> None:
        """``senders``: per message type, the broker users it is accepted from (types not
        named are accepted from anyone). ``refusals``: per message type, who answers data that
        fails its schema."""
        self.consumer = consumer
        self.queue = queue
        self._source = source
        self._pool = pool
        self._registry = registry
        self._handlers = {registry.spec_of(model).type: h for model, h in handlers.items()}
        self._dead_letters = dead_letters
        self._wakeup = wakeup
        self._settings = settings or ConsumerSettings()
        self._faults = faults
        self._senders = dict(senders or {})
        self._refusals = dict(refusals or {})
        self._stopping = False
        self.stats = RunnerStats()

    def stop(self) -> None:
        self._stopping = True

    async def __call__(self, delivery: Delivery) -> None:
        structlog.contextvars.bind_contextvars(
            message_id=delivery.message_id, message_type=delivery.type, queue=self.queue
        )
        try:
            await self._process(delivery)
        finally:
            structlog.contextvars.unbind_contextvars(
                "message_id", "message_type", "queue", "order_id"
            )

    async def _process(self, delivery: Delivery) -> None:
        parent = context_from_headers(delivery.headers or {})
        with _tracer.start_as_current_span(
            f"process {delivery.routing_key or self.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=self._span_attributes(delivery, None),
        ) as span:
            try:
                envelope, message, handler = self._read(delivery)
            except PoisonMessage as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                log.warning("consumer.poison", error_class=type(exc).__name__, error=str(exc))
                await self._dead_letter(delivery, exc, attempts=0)
                return
            if envelope.subject:
                span.set_attribute("orderflow.order_id", envelope.subject)
                structlog.contextvars.bind_contextvars(order_id=envelope.subject)
            outcome, attempts = await self._run_with_retries(envelope, message, handler)
            if outcome is not None:
                span.record_exception(outcome)
                span.set_status(Status(StatusCode.ERROR, type(outcome).__name__))
                if self._stopping and isinstance(outcome, InfrastructureUnavailable):
                    self.stats.requeued += 1
                    await settle(delivery, ack=False)
                    return
                await self._dead_letter(delivery, outcome, attempts=attempts)
                return
            self._faults.point("consumer.after_commit")
            await settle(delivery, ack=True)

    def _read(self, delivery: Delivery) -> tuple[Envelope, Message | None, Handler]:
        """The delivery as (event, message, handler), or the PoisonMessage that says why not.

        Whatever goes wrong while reading is poison, predicted or not: a reader that lets any
        exception out would leave the delivery unsettled, holding a prefetch slot forever.
        """
        try:
            return self._read_unguarded(delivery)
        except PoisonMessage:
            raise
        except Exception as exc:
            raise MalformedMessage(
                f"the delivery could not be read: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None

    def _read_unguarded(self, delivery: Delivery) -> tuple[Envelope, Message | None, Handler]:
        if (delivery.content_encoding or "identity").lower() not in _PLAIN_ENCODINGS:
            raise UnsupportedContentType(
                f"content encoding {str(delivery.content_encoding)[:40]!r}: the body must be "
                "plain UTF-8 JSON"
            )
        envelope = codec.decode(
            delivery.body,
            content_type=delivery.content_type,
            max_bytes=self._settings.max_body_bytes,
        )
        # The event's own id is the idempotency key. The AMQP message_id should mirror it, but
        # clients (aio-pika among them) fill it with a random id when the caller sets none.
        self._registry.spec(envelope.type)  # unknown type or version: say which
        handler = self._handlers.get(envelope.type)
        if handler is None:
            raise UnknownMessageType(f"{self.consumer} has no handler for {envelope.type}")
        self._check_sender(envelope.type, delivery.user_id)
        try:
            return envelope, self._registry.parse(envelope), handler
        except InvalidMessageData as exc:
            refuse = self._refusals.get(envelope.type)
            if refuse is None:
                raise
            return envelope, None, _Refusal(refuse, exc)

    def _check_sender(self, type_name: str, user_id: object) -> None:
        """A type owned by a service is accepted only from that service's broker user.

        The broker refuses a publish whose ``user_id`` is not the publisher's login, so the
        property names who really sent the message (absent: the sender did not say).
        """
        allowed = self._senders.get(type_name)
        if allowed is None or user_id in allowed:
            return
        sender = f"user {str(user_id)[:64]!r}" if user_id else "a publisher that set no user_id"
        raise ImpostorMessage(
            f"{type_name} is accepted only from {', '.join(sorted(allowed))}; "
            f"this one came from {sender}"
        )

    async def _run_with_retries(
        self, envelope: Envelope, message: Message | None, handler: Handler
    ) -> tuple[BaseException | None, int]:
        """(None, attempts) once committed, or (the error to dead-letter with, attempts)."""
        conflicts = others = attempts = 0
        unavailable_since: float | None = None
        while True:
            attempts += 1
            try:
                await self._transaction(envelope, message, handler)
                return None, attempts
            except PoisonMessage as exc:  # raised by a handler: the data breaks a domain limit
                return exc, attempts
            except Exception as raw:
                error = translate(raw)
                if isinstance(error, ConcurrencyConflict):
                    conflicts += 1
                    give_up = conflicts > self._settings.conflict_retries
                elif isinstance(error, InfrastructureUnavailable):
                    unavailable_since = unavailable_since or time.monotonic()
                    give_up = self._stopping or (
                        time.monotonic() - unavailable_since > self._settings.unavailable_window
                    )
                else:
                    others += 1
                    give_up = others > OTHER_ERROR_RETRIES
                    log.error(
                        "consumer.handler_failed",
                        error_class=type(error).__name__,
                        error=str(error),
                        attempt=attempts,
                        exc_info=raw,
                    )
                if give_up:
                    return error, attempts
                self.stats.retries += 1
                delay = backoff.delay(
                    attempts, base=self._settings.retry_base, cap=self._settings.retry_cap
                )
                log.info(
                    "consumer.retry",
                    error_class=type(error).__name__,
                    attempt=attempts,
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _transaction(
        self, envelope: Envelope, message: Message | None, handler: Handler
    ) -> None:
        async with self._pool.acquire() as conn:
            with _db_span(handler, batched=False):
                async with unit_of_work(conn, self._wakeup) as uow:
                    fresh = await inbox.claim(
                        conn,
                        consumer=self.consumer,
                        message_id=envelope.id,
                        message_type=envelope.type,
                    )
                    if not fresh:
                        self.stats.duplicates += 1
                        log.info("consumer.duplicate")
                        return
                    await self._handle(conn, uow, envelope, message, handler)
            self.stats.processed += 1
            log.debug("consumer.handled", outbox_rows=uow.written)

    # -- batches ---------------------------------------------------------------------------
    async def process_batch(self, deliveries: Sequence[Delivery]) -> None:
        """Several deliveries, one transaction, one ack (``multiple=True`` on the last).

        Each message's inbox row, state changes and outbox rows still commit together, and its
        ack still follows the commit: the batch is all-or-nothing. Poison is dead-lettered first
        (confirmed), then covered by the same ack. If the batch transaction fails for any
        reason, it is rolled back and every message goes through the one-by-one path, with its
        own retries, dead-lettering and ack. Called by one worker per channel, so no other
        worker's deliveries can be acked by the multiple ack.
        """
        if len(deliveries) == 1:
            await self(deliveries[0])
            return
        readable: list[tuple[Delivery, Envelope, Message | None, Handler]] = []
        requeued: list[Delivery] = []
        for delivery in deliveries:
            try:
                readable.append((delivery, *self._read(delivery)))
            except PoisonMessage as exc:
                log.warning(
                    "consumer.poison",
                    error_class=type(exc).__name__,
                    error=str(exc),
                    message_id=delivery.message_id,
                )
                if not await self._publish_dead_letter(delivery, exc, attempts=0):
                    requeued.append(delivery)
        refused: list[tuple[Delivery, PoisonMessage]] = []
        try:
            await self._batch_transaction(readable, refused)
        except Exception as raw:
            error = translate(raw)
            log.info(
                "consumer.batch_fallback", size=len(readable), error_class=type(error).__name__
            )
            for delivery, *_ in readable:
                await self(delivery)
            await self._settle_rest(deliveries, requeued, skip={id(r[0]) for r in readable})
            return
        self._faults.point("consumer.after_commit")
        for delivery, error in refused:  # committed without them: now their dead letters
            if not await self._publish_dead_letter(delivery, error, attempts=1):
                requeued.append(delivery)
        if requeued:
            await self._settle_rest(deliveries, requeued, skip=set())
            return
        await settle(deliveries[-1], ack=True, multiple=True)

    async def _settle_rest(
        self, deliveries: Sequence[Delivery], requeued: list[Delivery], *, skip: set[int]
    ) -> None:
        """Settle one by one what the batch did not: poison acks, failed dead-letters requeued."""
        for delivery in deliveries:
            if id(delivery) in skip:
                continue
            await settle(delivery, ack=not any(delivery is r for r in requeued))

    async def _batch_transaction(
        self,
        items: list[tuple[Delivery, Envelope, Message | None, Handler]],
        refused: list[tuple[Delivery, PoisonMessage]],
    ) -> None:
        """Commit the batch; a refusal that cannot answer is undone alone (its savepoint, its
        outbox rows and its inbox row, so that a replay of its dead letter is processed) and
        appended to ``refused`` for the caller to dead-letter after the commit."""
        if not items:
            return
        keys = [_canonical(envelope.id) for _, envelope, _, _ in items]
        async with self._pool.acquire() as conn:
            async with unit_of_work(conn, self._wakeup) as uow:
                writer = uow
                fresh = await inbox.claim_many(
                    conn,
                    consumer=self.consumer,
                    messages=[(k, e.type) for k, (_, e, _, _) in zip(keys, items, strict=True)],
                )
                done: set[str] = set()
                undone: set[str] = set()  # refused here: a later copy is a duplicate too
                for key, (delivery, envelope, message, handler) in zip(keys, items, strict=True):
                    if key not in fresh or key in done or key in undone:
                        self.stats.duplicates += 1
                        log.info(
                            "consumer.duplicate",
                            message_id=delivery.message_id,
                            message_type=delivery.type,
                            queue=self.queue,
                            batched=True,
                        )
                        continue
                    done.add(key)
                    if not isinstance(handler, _Refusal):
                        await self._handle_in_batch(
                            conn, writer, delivery, envelope, message, handler
                        )
                        continue
                    mark = len(writer.pending)
                    try:
                        async with conn.transaction():  # a savepoint
                            await self._handle_in_batch(
                                conn, writer, delivery, envelope, message, handler
                            )
                    except PoisonMessage as exc:
                        del writer.pending[mark:]
                        await inbox.forget(conn, consumer=self.consumer, message_id=key)
                        done.discard(key)
                        undone.add(key)
                        refused.append((delivery, exc))
            self.stats.processed += len(done)

    async def _handle_in_batch(
        self,
        conn: Conn,
        writer: OutboxWriter,
        delivery: Delivery,
        envelope: Envelope,
        message: Message | None,
        handler: Handler,
    ) -> None:
        structlog.contextvars.bind_contextvars(
            message_id=delivery.message_id,
            message_type=delivery.type,
            queue=self.queue,
            order_id=envelope.subject,
        )
        try:
            with (
                _tracer.start_as_current_span(
                    f"process {delivery.routing_key or self.queue}",
                    context=context_from_headers(delivery.headers or {}),
                    kind=SpanKind.CONSUMER,
                    attributes=self._span_attributes(delivery, envelope),
                ),
                _db_span(handler, batched=True),
            ):
                await self._handle(conn, writer, envelope, message, handler)
                log.debug("consumer.handled", batched=True)
        finally:
            structlog.contextvars.unbind_contextvars(
                "message_id", "message_type", "queue", "order_id"
            )

    async def _handle(
        self,
        conn: Conn,
        outbox: OutboxWriter,
        envelope: Envelope,
        message: Message | None,
        handler: Handler,
    ) -> None:
        """Run the handler in the caller's transaction; its aggregates' events go to ``outbox``."""
        ctx = HandlerContext(
            conn=conn,
            envelope=envelope,
            registry=self._registry,
            source=self._source,
            outbox=outbox,
        )
        await handler(message, ctx)
        ctx.write_collected()

    def _span_attributes(self, delivery: Delivery, envelope: Envelope | None) -> dict[str, Any]:
        attributes = process_attributes(
            exchange=delivery.exchange or "",
            routing_key=delivery.routing_key or "",
            message_id=delivery.message_id or "",
            queue=self.queue,
        )
        if envelope is not None and envelope.subject:
            attributes["orderflow.order_id"] = envelope.subject
        return attributes

    async def _publish_dead_letter(
        self, delivery: Delivery, error: BaseException, *, attempts: int
    ) -> bool:
        """Dead-letter without settling; False when the broker did not confirm it, after a pause
        (the caller requeues the delivery, which must not come straight back in a tight loop)."""
        try:
            await self._dead_letters.dead_letter(
                delivery,
                queue=self.queue,
                error=error,
                attempts=max(attempts, delivery_count(delivery)),
            )
        except Exception as exc:  # not confirmed, or the channel is gone: requeue, never drop
            log.error("consumer.dead_letter_failed", error=f"{type(exc).__name__}: {exc}")
            self.stats.requeued += 1
            await asyncio.sleep(self._settings.retry_cap)
            return False
        self.stats.dead_lettered += 1
        log.warning(
            "consumer.dead_lettered",
            error_class=type(error).__name__,
            error=str(error)[:300],
            attempts=max(attempts, delivery_count(delivery)),
        )
        return True

    async def _dead_letter(
        self, delivery: Delivery, error: BaseException, *, attempts: int
    ) -> None:
        """Dead-letter and settle: ack once the dead letter is confirmed, else requeue."""
        confirmed = await self._publish_dead_letter(delivery, error, attempts=attempts)
        await settle(delivery, ack=confirmed)


def _db_span(handler: Handler, *, batched: bool) -> Any:
    """The CLIENT span around a handler's database work."""
    return _tracer.start_as_current_span(
        "postgresql transaction",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.operation.name": "TRANSACTION",
            "orderflow.handler": getattr(handler, "__qualname__", repr(handler)),
            "orderflow.batched": batched,
        },
    )


def _canonical(message_id: str) -> str:
    """The form PostgreSQL prints a uuid in, to match ids the inbox returns."""
    return str(uuid.UUID(message_id))
