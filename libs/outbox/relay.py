"""The outbox relay: publishes committed outbox rows to RabbitMQ, with confirms, in id order.

Wake-ups (LISTEN/NOTIFY is a hint, never the queue itself):
- in-process: a writer in the same process calls :meth:`OutboxRelay.wake` after its commit; no
  database round trip at all (:class:`Wakeup` chooses this when the local relay leads);
- NOTIFY: writers whose local relay is not the leader send a payload-free ``NOTIFY`` *after*
  commit; the leader LISTENs on a dedicated connection (not pooled);
- catch-up: on start and after every reconnect the relay drains everything pending;
- safety sweep: every ``sweep_interval`` seconds (default 5), whatever happened.
``docs/benchmarks.md`` records why NOTIFY is sent after commit rather than from a trigger.

Leadership: the listener connection holds ``pg_try_advisory_lock``; one relay per database
publishes, standbys retry every ``standby_interval`` and take over when the leader's session
ends (crash, kill, network loss), so per-aggregate order holds.

Each batch: claim rows ``FOR UPDATE SKIP LOCKED`` in one transaction, publish all of them
pipelined, await the confirms, mark the confirmed rows published, commit. A crash between the
publish and the commit leaves the rows unmarked: they are published again with the same message
id, and consumers' inboxes absorb the duplicate. A nacked or unroutable row is retried with
exponential backoff (``available_at``) and is dead after ``max_attempts``. A row without an answer
(broker gone) is not counted as an attempt: the relay backs off and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from libs.errors import ConfirmUnknown, PublishError
from libs.faults import NO_FAULTS, Faults
from libs.messaging.publisher import Outgoing, Publisher
from libs.observability.logging import get_logger
from libs.observability.tracing import context_from_headers, tracer
from libs.outbox import store
from libs.outbox.store import NOTIFY_CHANNEL, OutboxRow
from libs.pg.errors import translate
from libs.pg.pool import Conn, connect
from libs.settings import RelaySettings

log = get_logger(__name__)
_tracer = tracer("orderflow.outbox.relay")
PRUNE_EVERY = 60.0


class OutboxRelay:
    def __init__(
        self,
        *,
        name: str,
        dsn: str,
        publisher: Publisher,
        settings: RelaySettings | None = None,
        faults: Faults = NO_FAULTS,
        published_retention: float = 3600.0,
        listen: bool = True,
    ) -> None:
        self.name = name
        self._dsn = dsn
        self._publisher = publisher
        self._settings = settings or RelaySettings()
        self._faults = faults
        self._retention = published_retention
        # listen=False polls every sweep_interval: for poolers that break LISTEN (PgBouncer in
        # transaction mode) and as the benchmark's baseline.
        self._listen = listen
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lost_leadership = asyncio.Event()
        self._leader = False
        self._last_prune = 0.0
        self.published = 0
        self.batches = 0

    # -- public -------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self._leader

    def wake(self) -> None:
        """Ask for a drain now (called in-process after a commit that wrote outbox rows)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Contend for leadership and relay until :meth:`stop`; survives database restarts."""
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0
            except Exception as exc:
                error = translate(exc)
                failures += 1
                delay = min(
                    self._settings.retry_cap, self._settings.retry_base * 2 ** min(failures, 8)
                )
                log.warning(
                    "relay.session_failed",
                    relay=self.name,
                    error=f"{type(error).__name__}: {error}",
                    retry_in=round(delay, 2),
                )
                await self._sleep(delay)
            finally:
                self._leader = False

    # -- leadership -----------------------------------------------------------------------------
    async def _session(self) -> None:
        listener = await connect(
            self._dsn, application_name=f"orderflow-relay-listener:{self.name}"
        )
        worker: Conn | None = None
        self._lost_leadership.clear()
        listener.add_termination_listener(lambda _conn: self._on_listener_lost())
        try:
            if not await self._become_leader(listener):
                return
            if self._listen:
                await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            worker = await connect(self._dsn, application_name=f"orderflow-relay:{self.name}")
            self._leader = True
            log.info("relay.leader", relay=self.name)
            await self._lead(worker)
        finally:
            self._leader = False
            for conn in (worker, listener):
                if conn is not None and not conn.is_closed():
                    conn.terminate() if self._lost_leadership.is_set() else await conn.close()

    async def _become_leader(self, listener: Conn) -> bool:
        key = f"orderflow.relay:{self.name}"
        announced = False
        while not self._stopping.is_set() and not self._lost_leadership.is_set():
            if await listener.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
                return True
            if not announced:
                log.info("relay.standby", relay=self.name)
                announced = True
            await self._sleep(self._settings.standby_interval)
        return False

    def _on_listener_lost(self) -> None:
        # The advisory lock died with the session: stop publishing now, another relay may lead.
        self._lost_leadership.set()
        self._leader = False
        self._wake.set()

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------
    async def _lead(self, worker: Conn) -> None:
        unknown_streak = 0
        while not self._stopping.is_set() and not self._lost_leadership.is_set():
            # Clear before draining: a wake-up that arrives during the drain triggers another.
            self._wake.clear()
            unanswered = await self._drain(worker)
            if unanswered:
                unknown_streak += 1
                await self._sleep(
                    min(
                        self._settings.retry_cap,
                        self._settings.retry_base * 2 ** min(unknown_streak, 8),
                    )
                )
                continue
            unknown_streak = 0
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.sweep_interval)
            except TimeoutError:
                await self._maybe_prune(worker)

    async def _drain(self, worker: Conn) -> int:
        """Publish until nothing is claimable; returns how many rows got no answer."""
        while not self._lost_leadership.is_set():
            async with worker.transaction():
                rows = await store.claim(worker, limit=self._settings.batch_size)
                if not rows:
                    return 0
                outcomes = await self._publish(rows)
                self._faults.point("relay.after_publish")
                confirmed = [r.id for r, o in zip(rows, outcomes, strict=True) if o is None]
                failed = [
                    (r.id, f"{type(o).__name__}: {o}")
                    for r, o in zip(rows, outcomes, strict=True)
                    if o is not None and not isinstance(o, ConfirmUnknown)
                ]
                unanswered = sum(isinstance(o, ConfirmUnknown) for o in outcomes)
                await store.mark_published(worker, confirmed)
                dead = await store.mark_failed(
                    worker,
                    failed,
                    max_attempts=self._settings.max_attempts,
                    retry_base=self._settings.retry_base,
                    retry_cap=self._settings.retry_cap,
                )
            self.published += len(confirmed)
            self.batches += 1
            if failed or unanswered:
                log.warning(
                    "relay.publish_failed",
                    relay=self.name,
                    failed=len(failed),
                    unanswered=unanswered,
                    dead=dead,
                    first_error=(failed[0][1] if failed else None),
                )
            if unanswered:
                return unanswered
            if len(rows) < self._settings.batch_size:
                return 0
        return 0

    async def _publish(self, rows: Sequence[OutboxRow]) -> list[PublishError | None]:
        now = datetime.now(UTC)
        spans = []
        messages = []
        for row in rows:
            span = _tracer.start_span(
                f"publish {row.exchange}",
                context=context_from_headers(row.headers),
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "publish",
                    "messaging.destination.name": row.exchange,
                    "messaging.rabbitmq.destination.routing_key": row.routing_key,
                    "messaging.message.id": row.message_id,
                    "orderflow.outbox.id": row.id,
                    "orderflow.outbox.wait_ms": (now - row.created_at).total_seconds() * 1000,
                    "orderflow.outbox.attempts": row.attempts,
                    "orderflow.aggregate_id": row.aggregate_id,
                },
            )
            headers = dict(row.headers)
            headers.pop("correlation_id", None)
            if span.is_recording():
                ctx = span.get_span_context()
                headers["traceparent"] = (
                    f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
                )
            spans.append(span)
            messages.append(
                Outgoing(
                    exchange=row.exchange,
                    routing_key=row.routing_key,
                    body=row.payload,
                    message_id=row.message_id,
                    type=row.message_type,
                    timestamp=row.created_at,
                    correlation_id=row.headers.get("correlation_id"),
                    headers=headers,
                )
            )
        outcomes = await self._publisher.publish_many(messages)
        for span, outcome in zip(spans, outcomes, strict=True):
            if outcome is not None:
                span.record_exception(outcome)
                span.set_status(Status(StatusCode.ERROR, str(outcome)))
            span.end()
        return outcomes

    async def _maybe_prune(self, worker: Conn) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = time.monotonic()
        pruned = await store.prune_published(worker, older_than_seconds=self._retention)
        if pruned:
            log.info("relay.pruned", relay=self.name, rows=pruned)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


class Wakeup:
    """What a writer does after committing outbox rows: wake the relay as cheaply as possible."""

    def __init__(self, relay: OutboxRelay | None) -> None:
        self._relay = relay

    async def after_commit(self, conn: Conn) -> None:
        if self._relay is not None and self._relay.is_leader:
            self._relay.wake()
            return
        # Payload-free and outside the writer's transaction: it takes no commit-time lock.
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
