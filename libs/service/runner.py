"""Handling deliveries: one path for a single delivery and for a batch (a batch of one).

For the deliveries it is given the runner:

1. reads each (:mod:`libs.service.reading`); anything wrong is *poison*: dead-lettered with the
   reason, never retried. A type may have a *refuser* instead: data that fails its schema is
   then answered (for example with a rejection event) like a handler's work, and acked;
2. opens one transaction for all the readable ones: their inbox rows (``ON CONFLICT DO
   NOTHING``; a duplicate commits nothing else), each handler's state changes and outbox rows,
   each in its own CONSUMER span and log context — commit;
3. wakes the relay, then acks: one ack (``multiple=True`` on the last) when every delivery of a
   batch of several is to be acked, else one by one. An ack is never sent before the commit.

When a batch of several fails as a whole, it is rolled back and each message is committed alone
with its own retries, so one bad message costs only itself.

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from libs import backoff
from libs.errors import ConcurrencyConflict, InfrastructureUnavailable, PoisonMessage
from libs.faults import NO_FAULTS, Faults
from libs.inbox import store as inbox
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
from libs.service.context import Handler, HandlerContext, Refuser
from libs.service.reading import DeliveryReader, Refusal
from libs.settings import ConsumerSettings

__all__ = ["MessageRunner", "RunnerStats"]

log = get_logger(__name__)
_tracer = tracer("orderflow.consumer")
OTHER_ERROR_RETRIES = 2


@dataclass(slots=True)
class RunnerStats:
    """What the runner did, counted as it happens (not read back from its log)."""

    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    requeued: int = 0


@dataclass(slots=True, eq=False)
class _Work:
    """One delivery on its way: its span, what reading it gave, and how it is to be settled."""

    delivery: Delivery
    span: Span
    envelope: Envelope | None = None
    message: Message | None = None
    handler: Handler | None = None
    error: BaseException | None = None  # to be dead-lettered with
    attempts: int = 0
    requeue: bool = False  # settle by returning it to the queue

    @property
    def key(self) -> str:
        """The inbox key: the event id in the form PostgreSQL prints a uuid in."""
        assert self.envelope is not None
        return str(uuid.UUID(self.envelope.id))


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
        self._dead_letters = dead_letters
        self._wakeup = wakeup
        self._settings = settings or ConsumerSettings()
        self._faults = faults
        self._reader = DeliveryReader(
            consumer=consumer,
            registry=registry,
            handlers={registry.spec_of(model).type: h for model, h in handlers.items()},
            max_body_bytes=self._settings.max_body_bytes,
            senders=dict(senders or {}),
            refusals=dict(refusals or {}),
        )
        self._stopping = False
        self.stats = RunnerStats()

    def stop(self) -> None:
        self._stopping = True

    async def __call__(self, delivery: Delivery) -> None:
        """One delivery: a batch of one."""
        await self.process_batch([delivery])

    async def process_batch(self, deliveries: Sequence[Delivery]) -> None:
        """Handle and settle ``deliveries`` (see the module docstring).

        Called by one worker per channel in batch mode, so no other worker's deliveries can be
        acked by the multiple ack; a batch of one is acked alone.
        """
        works = [self._open(delivery) for delivery in deliveries]
        try:
            readable = [w for w in works if w.error is None]
            if len(readable) > 1:
                try:
                    await self._commit(readable)
                except Exception as raw:
                    log.info(
                        "consumer.batch_fallback",
                        size=len(readable),
                        error_class=type(translate(raw)).__name__,
                    )
                    for work in readable:
                        await self._commit_with_retries(work)
            elif readable:
                await self._commit_with_retries(readable[0])
            if readable:
                self._faults.point("consumer.after_commit")
            for work in works:
                if work.error is not None and not work.requeue:
                    with self._current(work):
                        work.requeue = not await self._publish_dead_letter(work)
            if len(works) > 1 and not any(w.requeue for w in works):
                await settle(deliveries[-1], ack=True, multiple=True)
            else:
                for work in works:
                    await settle(work.delivery, ack=not work.requeue)
        finally:
            for work in works:
                work.span.end()

    # -- reading ---------------------------------------------------------------------------
    def _open(self, delivery: Delivery) -> _Work:
        """The delivery's CONSUMER span, started, and what reading it gave."""
        span = _tracer.start_span(
            f"process {delivery.routing_key or self.queue}",
            context=context_from_headers(delivery.headers or {}),
            kind=SpanKind.CONSUMER,
            attributes=process_attributes(
                exchange=delivery.exchange or "",
                routing_key=delivery.routing_key or "",
                message_id=delivery.message_id or "",
                queue=self.queue,
            ),
        )
        work = _Work(delivery, span)
        try:
            work.envelope, work.message, work.handler = self._reader.read(delivery)
        except PoisonMessage as exc:
            work.error = exc
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            with self._current(work):
                log.warning("consumer.poison", error_class=type(exc).__name__, error=str(exc))
            return work
        if work.envelope.subject:
            span.set_attribute("orderflow.order_id", work.envelope.subject)
        return work

    @contextmanager
    def _current(self, work: _Work) -> Iterator[None]:
        """The work's span is the current span and its ids are in every log line meanwhile."""
        context: dict[str, Any] = {
            "message_id": work.delivery.message_id,
            "message_type": work.delivery.type,
            "queue": self.queue,
        }
        if work.envelope is not None and work.envelope.subject:
            context["order_id"] = work.envelope.subject
        with (
            trace.use_span(work.span, end_on_exit=False),
            structlog.contextvars.bound_contextvars(**context),
        ):
            yield

    # -- committing ------------------------------------------------------------------------
    async def _commit_with_retries(self, work: _Work) -> None:
        """Commit one message alone, retrying what may pass; what still fails is left in
        ``work.error`` (or ``work.requeue`` when stopping without a database)."""
        conflicts = others = 0
        unavailable_since: float | None = None
        while True:
            work.attempts += 1
            work.error = None
            try:
                await self._commit([work])
                return
            except PoisonMessage as exc:  # raised by a handler: the data breaks a domain limit
                self._fail(work, exc)
                return
            except Exception as raw:
                error = translate(raw)
                with self._current(work):
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
                            attempt=work.attempts,
                            exc_info=raw,
                        )
                    if give_up:
                        self._fail(work, error)
                        if self._stopping and isinstance(error, InfrastructureUnavailable):
                            work.requeue = True
                            self.stats.requeued += 1
                        return
                    self.stats.retries += 1
                    delay = backoff.delay(
                        work.attempts, base=self._settings.retry_base, cap=self._settings.retry_cap
                    )
                    log.info(
                        "consumer.retry",
                        error_class=type(error).__name__,
                        attempt=work.attempts,
                        retry_in=round(delay, 3),
                    )
                await asyncio.sleep(delay)

    @staticmethod
    def _fail(work: _Work, error: BaseException) -> None:
        work.error = error
        work.span.record_exception(error)
        work.span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    async def _commit(self, works: list[_Work]) -> None:
        """One transaction for ``works``: inbox rows, then each fresh message's handler.

        A refusal that cannot answer is undone alone (its savepoint, its outbox rows and its
        inbox row, so that a replay of its dead letter is processed) and left with its error, to
        be dead-lettered after the commit; anything else that raises rolls back everything.
        """
        handled: list[_Work] = []
        duplicates: list[_Work] = []
        async with self._pool.acquire() as conn, unit_of_work(conn, self._wakeup) as uow:
            fresh = await inbox.claim_many(
                conn,
                consumer=self.consumer,
                messages=[(w.key, w.envelope.type) for w in works if w.envelope is not None],
            )
            seen: set[str] = set()  # a second copy in the same batch is a duplicate too
            for work in works:
                if work.key not in fresh or work.key in seen:
                    duplicates.append(work)
                    continue
                seen.add(work.key)
                with self._current(work):
                    if await self._handle(conn, uow, work, batched=len(works) > 1):
                        handled.append(work)
        self.stats.processed += len(handled)
        self.stats.duplicates += len(duplicates)
        for work in duplicates:
            with self._current(work):
                log.info("consumer.duplicate")
        for work in handled:
            with self._current(work):
                log.debug("consumer.handled", outbox_rows=uow.written)

    async def _handle(
        self, conn: Conn, outbox: OutboxWriter, work: _Work, *, batched: bool
    ) -> bool:
        """Run the work's handler in the caller's transaction; its aggregates' events go to
        ``outbox``. False when a refusal could not answer (undone, ``work.error`` set)."""
        assert work.envelope is not None
        assert work.handler is not None
        ctx = HandlerContext(
            conn=conn,
            envelope=work.envelope,
            registry=self._registry,
            source=self._source,
            outbox=outbox,
        )
        with _tracer.start_as_current_span(
            "postgresql transaction",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.operation.name": "TRANSACTION",
                "orderflow.handler": getattr(work.handler, "__qualname__", repr(work.handler)),
                "orderflow.batched": batched,
            },
        ):
            if not isinstance(work.handler, Refusal):
                await work.handler(work.message, ctx)
                ctx.write_collected()
                return True
            mark = len(outbox.pending)
            try:
                async with conn.transaction():  # a savepoint
                    await work.handler(work.message, ctx)
                    ctx.write_collected()
            except PoisonMessage as exc:
                del outbox.pending[mark:]
                await inbox.forget(conn, consumer=self.consumer, message_id=work.key)
                self._fail(work, exc)
                work.attempts = max(work.attempts, 1)
                return False
            return True

    # -- dead letters ----------------------------------------------------------------------
    async def _publish_dead_letter(self, work: _Work) -> bool:
        """Dead-letter without settling; False when the broker did not confirm it, after a pause
        (the caller requeues the delivery, which must not come straight back in a tight loop)."""
        assert work.error is not None
        attempts = max(work.attempts, delivery_count(work.delivery))
        try:
            await self._dead_letters.dead_letter(
                work.delivery, queue=self.queue, error=work.error, attempts=attempts
            )
        except Exception as exc:  # not confirmed, or the channel is gone: requeue, never drop
            log.error("consumer.dead_letter_failed", error=f"{type(exc).__name__}: {exc}")
            self.stats.requeued += 1
            await asyncio.sleep(self._settings.retry_cap)
            return False
        self.stats.dead_lettered += 1
        log.warning(
            "consumer.dead_lettered",
            error_class=type(work.error).__name__,
            error=str(work.error)[:300],
            attempts=attempts,
        )
        return True
