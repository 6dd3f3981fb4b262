"""Running a saga definition: replies arrive as messages, deadlines fire from PostgreSQL rows.

:meth:`SagaCoordinator.handle` is a message handler: it runs inside the consumer runner's
transaction (inbox, instance row lock, new state, log, outbox rows: one commit).
:meth:`SagaCoordinator.run_timers` fires deadlines: it sleeps until the earliest deadline this
process knows of (an in-process timer, re-armed by every transition) or at most ``sweep``
seconds (to pick up deadlines set by other replicas), then claims due instances with
``FOR UPDATE SKIP LOCKED``. No broker plugin, no tight poll.

A due instance that another transaction holds (a reply being handled, another replica's timer)
is skipped by the claim and still is the earliest deadline: instead of waking again at once, the
timer then pauses ``BLOCKED_PAUSE`` seconds, doubling (jittered) up to ``sweep`` while the
instance stays held. The timer never dies on an error: any exception is logged and the loop goes
on after a capped backoff (:mod:`libs.backoff`); only cancellation or :meth:`stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from libs import backoff
from libs.messages.registry import Message, MessageRegistry
from libs.observability.logging import get_logger
from libs.observability.metrics import METRICS
from libs.observability.tracing import (
    context_from_headers,
    current_trace_headers,
    ids_of_current_span,
    tracer,
)
from libs.outbox.relay import Wakeup
from libs.outbox.store import OutboxWriter
from libs.outbox.unit_of_work import UnitOfWork, unit_of_work
from libs.pg.errors import translate
from libs.pg.pool import Conn
from libs.saga import store
from libs.saga.definition import SagaDefinition
from libs.saga.engine import start, transition
from libs.saga.state import TERMINAL, DeadlinePassed, Input, Reply, SagaState, Transition
from libs.service.context import HandlerContext

log = get_logger(__name__)
_MILESTONES = frozenset(
    {
        "completed",
        "compensated",
        "compensating",
        "timed_out",
        "ignored",
        "operator_retry",
        "operator_compensate",
    }
)
_tracer = tracer("orderflow.saga")
BLOCKED_PAUSE = 0.05
"""First pause of the timer when the earliest due instance is held by another transaction."""
FAILURE_PAUSE = 0.1
"""First pause of the timer after an error (then doubling, jittered, up to 5 s)."""
FAILURE_PAUSE_CAP = 5.0


_LOADED = "saga.loaded"  # a batch's instances in HandlerContext.shared
_CAUSES = {"timed_out": "timed_out", "operator_compensate": "operator"}
"""Log events beside ``compensating`` that say why it began (else a step's failure reply)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class SagaCoordinator:
    def __init__(
        self,
        definition: SagaDefinition,
        *,
        registry: MessageRegistry,
        source: str,
        sweep: float = 1.0,
        batch: int = 100,
    ) -> None:
        self.definition = definition
        self._registry = registry
        self._source = source
        self._sweep = sweep
        self._batch = batch
        self._next: datetime | None = None  # the earliest deadline still to come
        self._overdue = False  # a deadline is past that the last round could not claim
        self._timer_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.fired = 0

    # -- messages ---------------------------------------------------------------------------
    async def handle(self, message: Message, ctx: HandlerContext) -> None:
        now = utcnow()
        if isinstance(message, self.definition.start):
            t = start(self.definition, message, now=now)
            traceparent = current_trace_headers().get("traceparent")
            ids = ids_of_current_span()
            created = await store.insert(
                ctx.conn,
                saga=self.definition.name,
                state=t.state,
                traceparent=traceparent,
                entries=t.log,
                trace_id=ids[0] if ids else None,
            )
            if not created:
                log.info("saga.duplicate_start", saga_id=t.state.id)
                return
            await self.apply(ctx.conn, ctx.outbox, previous=None, t=t, logged=True)
            return
        saga_id = self.definition.key(message)
        batch: dict[str, store.Loaded] | None = ctx.shared.get(_LOADED)
        if batch is not None and saga_id in batch:
            loaded: store.Loaded | None = batch[saga_id]
        else:
            loaded = await store.load_for_update(
                ctx.conn, saga=self.definition.name, saga_id=saga_id
            )
        if loaded is None:
            log.warning("saga.reply_for_unknown_instance", saga_id=saga_id, type=message.TYPE)
            return
        t = await self.transition(
            ctx.conn, ctx.outbox, loaded.state, Reply(message, ctx.envelope.id), now=now
        )
        if batch is not None:  # the next message of this batch for this saga sees this state
            batch[saga_id] = store.Loaded(t.state, loaded.traceparent)

    async def prepare(
        self, conn: Conn, items: Sequence[tuple[Any, Message | None]], shared: dict[str, Any]
    ) -> None:
        """Lock and load, in one round trip, every instance the replies of a batch are for."""
        ids = sorted(
            {
                self.definition.key(message)
                for _, message in items
                if message is not None and not isinstance(message, self.definition.start)
            }
        )
        if ids:
            shared[_LOADED] = await store.load_many_for_update(
                conn, saga=self.definition.name, ids=ids
            )

    async def transition(
        self, conn: Conn, writer: OutboxWriter, state: SagaState, event: Input, *, now: datetime
    ) -> Transition:
        """Apply one input to a locked instance (also used by operator commands)."""
        t = transition(self.definition, state, event, now=now)
        await self.apply(conn, writer, previous=state, t=t)
        return t

    async def apply(
        self,
        conn: Conn,
        writer: OutboxWriter,
        *,
        previous: SagaState | None,
        t: Transition,
        logged: bool = False,
    ) -> None:
        state = t.state
        span = trace.get_current_span()
        span.set_attribute("orderflow.order_id", state.id)
        span.set_attribute("orderflow.saga.state", state.status.value)
        if state.step:
            span.set_attribute("orderflow.saga.step", state.step)
        ids = ids_of_current_span()
        trace_id = ids[0] if ids else None
        created_at: datetime | None = None
        if t.accepted and previous is not None:
            created_at = await store.save_transition(
                conn,
                saga=self.definition.name,
                state=state,
                previous_version=previous.version,
                entries=t.log,
                trace_id=trace_id,
            )
        elif not logged:
            await store.append_log(
                conn, saga=self.definition.name, state=state, entries=t.log, trace_id=trace_id
            )
        for send in t.commands:
            spec = self._registry.spec_of(send.command)
            envelope = self._registry.envelope(
                send.command,
                source=self._source,
                subject=state.id,
                correlation_id=state.id,
                message_id=send.message_id,
            )
            writer.add(
                envelope, exchange=spec.exchange, aggregate_type="saga", aggregate_id=state.id
            )
        for entry in t.log:
            # milestones at INFO; the step-by-step chatter is in saga_log and at DEBUG
            emit = log.info if entry.event in _MILESTONES else log.debug
            emit(
                f"saga.{entry.event}",
                saga_id=state.id,
                step=entry.step,
                status=state.status.value,
                **{
                    k: v
                    for k, v in entry.detail.items()
                    if k in ("type", "reason", "why", "attempt")
                },
            )
        if state.deadline_at is not None:
            self.note_deadline(state.deadline_at)
        if isinstance(writer, UnitOfWork):
            writer.committed.append(lambda: self._count(previous, t, created_at))

    def _count(
        self, previous: SagaState | None, t: Transition, created_at: datetime | None
    ) -> None:
        """Metrics of a committed transition: a start, a compensation begun (by the step and
        what caused it), an end (by outcome) and its duration."""
        saga = {"orderflow.saga": self.definition.name}
        state = t.state
        if previous is None:
            METRICS.saga_started.add(1, saga)
            return
        events = {entry.event: entry for entry in t.log}
        begun = events.get("compensating")
        if begun is not None:
            cause = next((c for e, c in _CAUSES.items() if e in events), "failed")
            step = begun.step or previous.step or ""
            METRICS.saga_compensations.add(
                1, {**saga, "orderflow.saga.step": step, "orderflow.cause": cause}
            )
        if state.status in TERMINAL and previous.status not in TERMINAL:
            outcome = {**saga, "orderflow.outcome": state.status.value.lower()}
            METRICS.saga_ended.add(1, outcome)
            if created_at is not None:
                METRICS.saga_duration.record((utcnow() - created_at).total_seconds(), outcome)

    async def gauges(self, conn: Conn) -> list[tuple[str, dict[str, str], float]]:
        """Sagas in flight by status and step, past their deadline, the oldest's age."""
        return await store.gauges(conn, saga=self.definition.name)

    async def prune(self, conn: Conn, *, older_than_seconds: float, limit: int) -> int:
        """Ended instances (and their logs) older than ``older_than_seconds``, up to ``limit``."""
        return await store.prune_finished(
            conn, saga=self.definition.name, older_than_seconds=older_than_seconds, limit=limit
        )

    def note_deadline(self, deadline: datetime) -> None:
        if self._next is None or deadline < self._next:
            self._next = deadline
            self._timer_wake.set()

    # -- deadlines --------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self._timer_wake.set()

    async def run_timers(self, pool: Any, wakeup: Wakeup) -> None:
        """Fire due deadlines until :meth:`stop` (or cancellation); survives any error."""
        failures = 0
        blocked = 0  # consecutive rounds in which a past deadline could not be claimed
        self._timer_wake.set()  # a first round at once: deadlines that passed while down
        while not self._stopping.is_set():
            try:
                await self._wait_for_next(blocked)
                if self._stopping.is_set():
                    return
                fired = await self._fire_due(pool, wakeup)
                failures = 0
                blocked = blocked + 1 if self._overdue and fired == 0 else 0
            except Exception as exc:
                failures += 1
                pause = backoff.delay(failures, base=FAILURE_PAUSE, cap=FAILURE_PAUSE_CAP)
                with contextlib.suppress(Exception):  # the timer outlives even a broken logger
                    error = translate(exc)
                    log.warning(
                        "saga.timers_failed",
                        error=f"{type(error).__name__}: {error}",
                        failures=failures,
                        retry_in=round(pause, 3),
                        exc_info=exc,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=pause)

    async def _wait_for_next(self, blocked: int) -> None:
        """Sleep until the next known deadline, at most ``sweep``; a wake-up ends it early.

        ``blocked`` > 0: a deadline is past but held by another transaction, so waking "at" it
        would be a busy loop: come back for it after a pause, longer each round, at most
        ``sweep`` — or at the next deadline still to come, if that is sooner.
        """
        timeout = self._sweep
        if self._next is not None:
            timeout = min(timeout, max(0.0, (self._next - utcnow()).total_seconds()))
        if blocked:
            pause = backoff.delay(
                blocked, base=min(BLOCKED_PAUSE, self._sweep), cap=self._sweep, jitter=0.5
            )
            timeout = min(timeout, pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._timer_wake.wait(), timeout=timeout)
        self._timer_wake.clear()

    async def _fire_due(self, pool: Any, wakeup: Wakeup) -> int:
        """Fire every claimable due deadline; returns how many fired. Leaves ``_next`` at the
        earliest deadline still to come and ``_overdue`` telling whether one is past unclaimed."""
        fired = 0
        async with pool.acquire() as conn:
            while True:
                async with unit_of_work(conn, wakeup) as uow:
                    now = utcnow()
                    due = await store.claim_due(
                        conn, saga=self.definition.name, now=now, limit=self._batch
                    )
                    for loaded in due:
                        parent = context_from_headers({"traceparent": loaded.traceparent or ""})
                        structlog.contextvars.bind_contextvars(order_id=loaded.state.id)
                        with _tracer.start_as_current_span(
                            "saga deadline",
                            context=parent,
                            kind=SpanKind.INTERNAL,
                            attributes={
                                "orderflow.order_id": loaded.state.id,
                                "orderflow.saga.state": loaded.state.status.value,
                                "orderflow.saga.step": loaded.state.step or "",
                            },
                        ):
                            await self.transition(
                                conn, uow, loaded.state, DeadlinePassed(), now=now
                            )
                self.fired += len(due)
                fired += len(due)
                if len(due) < self._batch:
                    break
            self._next, self._overdue = await store.next_deadline(conn, saga=self.definition.name)
        return fired
