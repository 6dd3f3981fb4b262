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
with its own retries, then dead-lettered or settled at once, so one bad message costs only
itself and holds back no other message's ack.

Failures inside step 2 are translated (``libs.pg.errors``): a serialization failure or deadlock is
retried with backoff up to ``conflict_retries`` times, an unreachable database for up to
``unavailable_window`` seconds, anything else (a bug, a constraint) twice; what still fails is
dead-lettered with its reason and attempt count (counted in :data:`METRICS` and ``stats``). An
unconfirmed dead letter requeues the delivery, never drops it. A crash leaves it unacked: the
broker redelivers it, and quorum queues' ``x-delivery-limit`` ends a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg
import structlog
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from libs import backoff
from libs.errors import ConcurrencyConflict, InfrastructureUnavailable, PoisonMessage
from libs.faults import NO_FAULTS, Faults
from libs.inbox import store as inbox
from libs.messages.registry import Message, MessageRegistry
from libs.messaging.consumer import DeadLetterPublisher, Delivery, delivery_count, settle
from libs.observability.logging import get_logger
from libs.observability.metrics import ERROR, METRICS, QUEUE
from libs.observability.tracing import tracer
from libs.outbox.relay import Wakeup
from libs.outbox.store import OutboxWriter
from libs.outbox.unit_of_work import unit_of_work
from libs.pg.errors import translate
from libs.pg.pool import Conn
from libs.service.context import Handler, HandlerContext, Preparer, Refuser
from libs.service.reading import DeliveryReader, Refusal
from libs.service.work import RunnerStats, Work, db_span, record
from libs.settings import ConsumerSettings

__all__ = ["MessageRunner", "RunnerStats"]

log = get_logger(__name__)
_tracer = tracer("orderflow.consumer")
OTHER_ERROR_RETRIES = 2
_ACK = {"orderflow.operation": "settle"}


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
        prepare: Preparer | None = None,
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
        self._prepare = prepare
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
        started = time.perf_counter()
        works: list[Work] = []
        try:
            for delivery in deliveries:
                works.append(self._open(delivery))
            readable = [w for w in works if w.error is None]
            if len(readable) > 1 and await self._commit_together(readable):
                await self._finish(works)
            else:  # each alone: committed with its own retries, then settled at once
                seen: set[str] = set()  # a later copy of a message of this batch is a duplicate
                for work in works:
                    if work.error is None and work.key in seen:
                        self._duplicate(work)
                    elif work.error is None:
                        seen.add(work.key)
                        await self._commit_with_retries(work)
                    await self._finish([work])
            record(
                works,
                queue=self.queue,
                kind_of=self._reader.known_type,
                elapsed=time.perf_counter() - started,
            )
        finally:
            for work in works:
                work.span.end()

    async def _commit_together(self, works: list[Work]) -> bool:
        """One transaction for all of ``works``; False (rolled back, the works as they were
        before) when it failed, for each to be committed alone."""
        try:
            await self._commit(works)
            return True
        except Exception as raw:
            log.info(
                "consumer.batch_fallback",
                size=len(works),
                error_class=type(translate(raw)).__name__,
            )
            for work in works:
                work.error, work.duplicate, work.attempts, work.committed = None, False, 0, False
            return False

    async def _finish(self, works: list[Work]) -> None:
        """Dead-letter what failed, then settle: one multiple ack for a batch of several that
        is all to be acked, else one by one."""
        if any(w.committed for w in works):
            self._faults.point("consumer.after_commit")
        for work in works:
            if work.error is not None and not work.requeue:
                with self._current(work):
                    work.requeue = not await self._publish_dead_letter(work)
        if len(works) > 1 and not any(w.requeue for w in works):
            await settle(works[-1].delivery, ack=True, multiple=True)
            METRICS.amqp_operations.add(1, _ACK)
            return
        for work in works:
            with self._current(work):
                await settle(work.delivery, ack=not work.requeue)
        METRICS.amqp_operations.add(len(works), _ACK)

    def _duplicate(self, work: Work) -> None:
        work.duplicate = True
        self.stats.duplicates += 1
        with self._current(work):
            # redelivered: the broker sent it again (an ack lost with its channel), not a copy
            log.info("consumer.duplicate", redelivered=bool(work.delivery.redelivered))

    # -- reading ---------------------------------------------------------------------------
    def _open(self, delivery: Delivery) -> Work:
        """The delivery's CONSUMER span, started, and what reading it gave."""
        work = Work.start(delivery, self.queue)
        span = work.span
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
    def _current(self, work: Work) -> Iterator[None]:
        """The work's span is the current span and its ids are in every log line meanwhile."""
        context: dict[str, Any] = {
            "message_id": work.delivery.message_id,
            "message_type": work.delivery.type,
            "queue": self.queue,
        }
        if work.envelope is not None and work.envelope.subject:
            context["order_id"] = work.envelope.subject
        with (
            trace.use_span(
                work.span,
                end_on_exit=False,
                record_exception=False,  # the outcome sets the status: a retry may still pass
                set_status_on_exception=False,
            ),
            structlog.contextvars.bound_contextvars(**context),
        ):
            yield

    # -- committing ------------------------------------------------------------------------
    async def _commit_with_retries(self, work: Work) -> None:
        """Commit one message alone, retrying what may pass; what still fails is left in
        ``work.error`` (or ``work.requeue`` when stopping without a database)."""
        conflicts = others = 0
        unavailable_since: float | None = None
        while True:
            work.attempts += 1
            work.error, work.duplicate, work.committed = None, False, False
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
                    METRICS.retries.add(1, {QUEUE: self.queue, ERROR: type(error).__name__})
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
    def _fail(work: Work, error: BaseException) -> None:
        work.error = error
        work.span.record_exception(error)
        work.span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    async def _commit(self, works: list[Work]) -> None:
        """One transaction for ``works``: inbox rows, then each fresh message's handler.

        A refusal that cannot answer is undone alone (its savepoint, its outbox rows and its
        inbox row, so that a replay of its dead letter is processed) and left with its error, to
        be dead-lettered after the commit; anything else that raises rolls back everything.
        The database CLIENT span covers the whole transaction of a single message, and each
        handler's share of a batch's.
        """
        handled: list[Work] = []
        duplicates: list[Work] = []
        alone = len(works) == 1
        with contextlib.ExitStack() as scope:
            if alone:
                scope.enter_context(self._current(works[0]))
                scope.enter_context(db_span(works[0], batched=False))
            async with self._pool.acquire() as conn, unit_of_work(conn, self._wakeup) as uow:
                fresh = await inbox.claim_many(
                    conn,
                    consumer=self.consumer,
                    messages=[(w.key, w.envelope.type) for w in works if w.envelope is not None],
                )
                seen: set[str] = set()  # a second copy in the same batch is a duplicate too
                todo: list[Work] = []
                for work in works:
                    if work.key not in fresh or work.key in seen:
                        duplicates.append(work)
                        continue
                    seen.add(work.key)
                    todo.append(work)
                shared: dict[str, Any] = {}
                if self._prepare is not None and todo:
                    items = [(w.envelope, w.message) for w in todo if w.envelope is not None]
                    await self._prepare(conn, items, shared)
                for work in todo:
                    with contextlib.ExitStack() as own:
                        if not alone:
                            own.enter_context(self._current(work))
                            own.enter_context(db_span(work, batched=True))
                        if await self._handle(conn, uow, work, shared):
                            handled.append(work)
        self.stats.processed += len(handled)
        for work in duplicates:
            self._duplicate(work)
        for work in handled:
            work.committed = True
            with self._current(work):
                log.debug("consumer.handled", outbox_rows=work.outbox_rows)

    async def _handle(
        self, conn: Conn, outbox: OutboxWriter, work: Work, shared: dict[str, Any]
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
            shared=shared,
        )
        mark = len(outbox.pending)
        if not isinstance(work.handler, Refusal):
            await work.handler(work.message, ctx)
            ctx.write_collected()
            work.outbox_rows = len(outbox.pending) - mark
            return True
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
        work.outbox_rows = len(outbox.pending) - mark
        return True

    # -- dead letters ----------------------------------------------------------------------
    async def _publish_dead_letter(self, work: Work) -> bool:
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
