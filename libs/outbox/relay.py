"""The outbox relay: publishes committed outbox rows to RabbitMQ, with confirms, in id order.

Wake-ups (LISTEN/NOTIFY is a hint, never the queue itself):
- hand-off: a writer in the same process hands the rows it just committed to the leading relay
  (:meth:`OutboxRelay.hand`), which publishes them without claiming them and marks them in one
  statement. Only rows that no earlier unpublished row of their aggregate holds back are handed
  (the writer's insert tells, in the same statement); for the others the relay claims;
- NOTIFY: writers whose local relay is not the leader send a payload-free ``NOTIFY`` *after*
  commit; the leader LISTENs on a dedicated connection (not pooled);
- catch-up: on start and after every reconnect the relay drains everything pending;
- safety sweep: a claim at least every ``sweep_interval`` seconds (default 5), however busy
  the hand-off keeps the relay (one handed batch and a due claim alternate).
``docs/benchmarks.md`` records why NOTIFY is sent after commit rather than from a trigger.

Leadership: the listener connection holds ``pg_try_advisory_lock``; one relay per database
publishes, standbys retry every ``standby_interval`` and take over when the leader's session
ends (crash, kill, network loss), so per-aggregate order holds.

Each batch: claim rows ``FOR UPDATE SKIP LOCKED`` in one transaction (id order), publish them in
*waves*, mark the confirmed rows published, commit. A handed batch skips the claim: its rows are
published in waves the same way and the confirmed ones marked in one statement. Handed rows wait
in the relay's memory only: a crash or a lost lead leaves them pending in the table, where the
next leader's catch-up claims them. A claim drops the rows it took from the hand-off and the
relay refuses them if a slow writer hands them over later, so a claimed row is not sent a
second time from the hand-off. The hand-off holds at most ``HANDED_MAX`` batches and is refused
while the relay backs off after a publish got no answer: then rows wait in the table, for a
claim. A crash between the publish and the commit
leaves the rows unmarked: they are published again with the same message id, and consumers'
inboxes absorb the duplicate. A nacked or unroutable row is retried after a capped, jittered
exponential delay (:mod:`libs.backoff`, stored in ``available_at``) and is dead after
``max_attempts``. A row without an answer (broker gone) is not counted as an attempt: the relay
backs off and tries again. After a nack the relay wakes when each nacked row's delay is over,
not only at the next sweep (rows nacked under an earlier leader wait for a sweep).

Per-aggregate order — what is guaranteed, exactly: the first copy of each outbox row that
reaches the broker comes after the first copies of every earlier row of its aggregate
(``aggregate_type``, ``aggregate_id``), except after a *dead* row, which leaves a gap: the
later rows go on without it (replaying it later delivers it out of order). Later copies
(re-publishes) may arrive in any order; inboxes drop them by message id, so a consumer on one
queue *processes* each aggregate's messages in outbox order. How: wave *n* of a batch holds the
*n*-th row of each aggregate in the batch, and a wave is sent only once every confirm of the
previous wave is in — one round trip for a batch in which no aggregate appears twice (the
usual case), one more per extra row of the busiest aggregate. An aggregate whose row is nacked,
returned or unanswered sends nothing more in this batch: its later rows stay unmarked, and
``store.claim`` holds them back until that row is published or dead. A row without an answer
ends the batch (the broker is probably gone; waiting out more confirm timeouts would not help).
Across batches the same holds: ``store.claim`` takes rows in id order and holds back the rows
behind a row that waits for its retry, so an earlier row of the aggregate is published, dead, or
in the same batch (hence in an earlier wave). Handed rows keep it too: a row is handed over only
if its insert saw no earlier unpublished row of its aggregate (rows inserted together are handed
in id order), and once a row of an aggregate fails, gets no answer or is held back, whatever of
that aggregate is still in the hand-off is dropped from it and left to the claim. "Earlier" is id order among committed rows; writers
of one aggregate serialise on it (the services' per-order locks), so ids follow their commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from libs import backoff
from libs.errors import ConfirmUnknown, PublishError
from libs.faults import NO_FAULTS, Faults
from libs.messaging.publisher import Outgoing, Publisher
from libs.observability.logging import get_logger
from libs.observability.messaging import send_attributes, trace_headers_of
from libs.observability.metrics import METRICS
from libs.observability.tracing import context_from_headers, tracer
from libs.outbox import store
from libs.outbox.store import NOTIFY_CHANNEL, OutboxRow
from libs.pg.errors import translate
from libs.pg.pool import Conn, connect
from libs.settings import RelaySettings

log = get_logger(__name__)
_tracer = tracer("orderflow.outbox.relay")
RELAY = "orderflow.relay"
LEADER = "orderflow.relay.leader"
_PUBLISH = {"orderflow.operation": "publish"}
JITTER = 0.5
"""Relay delays use equal jitter (at least half the exponential ceiling): they still grow, so
``max_attempts`` keeps meaning a span of time, while replicas and rows do not retry in step."""
HANDED_MAX = 4
"""Batches of handed-over rows a relay holds in memory at most; past that, writers' rows are
claimed from the table."""
CLAIMED_KEPT = 4
"""Batches of claimed ids remembered, to refuse them from a writer that hands them over late."""


class OutboxRelay:
    def __init__(
        self,
        *,
        name: str,
        dsn: str,
        publisher: Publisher,
        settings: RelaySettings | None = None,
        faults: Faults = NO_FAULTS,
        listen: bool = True,
    ) -> None:
        self.name = name
        self._dsn = dsn
        self._publisher = publisher
        self._settings = settings or RelaySettings()
        self._faults = faults
        # listen=False polls every sweep_interval: for poolers that break LISTEN (PgBouncer in
        # transaction mode) and as the benchmark's baseline.
        self._listen = listen
        self._wake = asyncio.Event()
        self._claim_due = True  # catch up on start: claim whatever is pending
        self._last_claim = 0.0  # monotonic time of the last claiming drain
        self._handed: deque[OutboxRow] = deque()
        self._backing_off = False  # after a publish got no answer: no hand-offs meanwhile
        # ids a claim took lately, oldest first: a writer slow to hand them over must not send
        # them again (a dict keeps insertion order, so the oldest is evicted first)
        self._claimed: dict[int, None] = {}
        self._stopping = asyncio.Event()
        self._lost_leadership = asyncio.Event()
        self._leader = False
        self._retries: list[float] = []  # heap: monotonic times nacked rows of this leader are due
        self.published = 0
        self.batches = 0
        self.claims = 0  # claim queries run (rows handed over by writers need none)

    # -- public -------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self._leader

    def wake(self) -> None:
        """Ask for a claiming drain now (rows committed that were not handed over)."""
        self._claim_due = True
        self._wake.set()

    def hand(self, rows: Sequence[OutboxRow]) -> bool:
        """Publish these just-committed rows (oldest first) without claiming them. False, and
        the rows are left to a claim, when this relay does not lead, is backing off after a
        publish got no answer, or already holds ``HANDED_MAX`` batches' worth of rows (the
        backlog then waits in the table, not in memory)."""
        if (
            not self._leader
            or self._backing_off
            or len(self._handed) >= HANDED_MAX * self._settings.batch_size
        ):
            return False
        self._handed.extend(r for r in rows if r.id not in self._claimed)
        self._wake.set()
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Contend for leadership and relay until :meth:`stop`; survives database restarts."""
        failures = 0
        METRICS.gauges.set(LEADER, 0, {RELAY: self.name})  # standing by, until it leads
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0
            except Exception as exc:
                error = translate(exc)
                failures += 1
                delay = self._backoff(failures)
                with contextlib.suppress(Exception):  # the relay outlives even a broken logger
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
            self._dsn,
            application_name=f"orderflow-relay-listener:{self.name}:{socket.gethostname()}:{os.getpid()}",
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
            METRICS.gauges.set(LEADER, 1, {RELAY: self.name})
            log.info("relay.leader", relay=self.name)
            await self._lead(worker)
        finally:
            self._leader = False
            self._handed.clear()  # pending in the table: the next leader claims them
            METRICS.gauges.set(LEADER, 0, {RELAY: self.name})
            for conn in (worker, listener):
                if conn is not None and not conn.is_closed():
                    conn.terminate() if self._lost_leadership.is_set() else await conn.close()

    async def _become_leader(self, listener: Conn) -> bool:
        key = _lock_key(self.name)
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
        self._handed.clear()
        METRICS.gauges.set(LEADER, 0, {RELAY: self.name})
        self._wake.set()

    def _on_notify(self, *_: Any) -> None:
        self.wake()

    # -- the loop -------------------------------------------------------------------------------
    async def _lead(self, worker: Conn) -> None:
        unknown_streak = 0
        self._claim_due = True  # catch-up: whatever is pending from before
        while not self._stopping.is_set() and not self._lost_leadership.is_set():
            # Clear before draining: a wake-up that arrives during the drain triggers another.
            self._wake.clear()
            now = time.monotonic()
            while self._retries and self._retries[0] <= now:
                heapq.heappop(self._retries)  # due: this drain claims the retried rows again
                self._claim_due = True
            if now - self._last_claim >= self._settings.sweep_interval:
                self._claim_due = True  # the safety sweep, however busy the hand-off keeps us
            # one handed batch, then a claim if one is due: neither can starve the other
            unanswered = await self._publish_handed(worker)
            if not unanswered and self._claim_due:
                self._claim_due = False
                self._last_claim = time.monotonic()
                unanswered = await self._drain(worker)
            if unanswered:
                self._claim_due = True  # what got no answer is pending: claim it next time
                self._backing_off = True  # meanwhile writers' rows wait in the table
                self._handed.clear()
                unknown_streak += 1
                try:
                    await self._sleep(self._backoff(unknown_streak))
                finally:
                    self._backing_off = False
                continue
            unknown_streak = 0
            if self._handed:
                continue
            timeout = max(0.0, self._last_claim + self._settings.sweep_interval - time.monotonic())
            if self._retries:  # a nacked row is due before the sweep
                timeout = min(timeout, max(0.0, self._retries[0] - time.monotonic()) + 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    def _backoff(self, attempt: int) -> float:
        return backoff.delay(
            attempt, base=self._settings.retry_base, cap=self._settings.retry_cap, jitter=JITTER
        )

    async def _drain(self, worker: Conn) -> int:
        """Publish until nothing is claimable; returns how many rows got no answer. Each nacked
        row's retry time joins ``_retries``, so :meth:`_lead` wakes up when it is due."""
        while not self._lost_leadership.is_set():
            async with worker.transaction():
                rows = await store.claim(worker, limit=self._settings.batch_size)
                self.claims += 1
                if not rows:
                    return 0
                self._remember_claimed(rows)
                unanswered = await self._send(worker, rows)
            if unanswered:
                return unanswered
            if len(rows) < self._settings.batch_size:
                return 0
        return 0

    def _remember_claimed(self, rows: Sequence[OutboxRow]) -> None:
        """A claim took ``rows``: drop them from the hand-off, and refuse them if a writer
        hands them over later (it committed before the claim, but resumed after it)."""
        self._claimed.update(dict.fromkeys(r.id for r in rows))
        excess = len(self._claimed) - CLAIMED_KEPT * self._settings.batch_size
        for oldest in list(itertools.islice(self._claimed, max(0, excess))):
            del self._claimed[oldest]
        if self._handed:
            self._handed = deque(r for r in self._handed if r.id not in self._claimed)

    async def _publish_handed(self, worker: Conn) -> int:
        """Publish one batch of the rows writers handed over, oldest first, marked in one
        statement (no claim, no transaction); returns how many rows got no answer."""
        if not self._handed or self._lost_leadership.is_set() or self._stopping.is_set():
            return 0
        size = min(len(self._handed), self._settings.batch_size)
        rows = [self._handed.popleft() for _ in range(size)]
        return await self._send(worker, rows)

    async def _send(self, worker: Conn, rows: Sequence[OutboxRow]) -> int:
        """Publish ``rows`` in waves and record each outcome on ``worker`` (in the caller's
        transaction, if any); returns how many got no answer.

        An aggregate whose row failed, got no answer or was held back sends nothing more from
        the hand-off either: its handed rows are dropped (they are pending in the table, where
        the claim holds them behind that row) and a claim is due. Without this, a later row of
        the aggregate in the next handed batch would overtake the failed one."""
        outcomes = await self._publish(rows)
        self._faults.point("relay.after_publish")
        confirmed = [r.id for r in rows if r.id in outcomes and outcomes[r.id] is None]
        failed = [
            (r.id, f"{type(o).__name__}: {o}", self._backoff(r.attempts + 1))
            for r in rows
            if (o := outcomes.get(r.id)) is not None and not isinstance(o, ConfirmUnknown)
        ]
        # no answer: sent again later with the same id, and they may have arrived already
        unanswered_ids = [
            r.message_id for r in rows if isinstance(outcomes.get(r.id), ConfirmUnknown)
        ]
        unanswered = len(unanswered_ids)
        held_back = len(rows) - len(outcomes)
        await store.mark_published(worker, confirmed)
        dead = await store.mark_failed(worker, failed, max_attempts=self._settings.max_attempts)
        self.published += len(confirmed)
        self.batches += 1
        self._measure(rows, confirmed, sent=len(outcomes))
        now = time.monotonic()
        for delay in {delay for _, _, delay in failed}:
            heapq.heappush(self._retries, now + delay)
        stalled = {
            (r.aggregate_type, r.aggregate_id)
            for r in rows
            if r.id not in outcomes or outcomes[r.id] is not None
        }
        if stalled:
            self._claim_due = True
            if self._handed:
                self._handed = deque(
                    r for r in self._handed if (r.aggregate_type, r.aggregate_id) not in stalled
                )
        if failed or unanswered:
            log.warning(
                "relay.publish_failed",
                relay=self.name,
                failed=len(failed),
                unanswered=unanswered,
                held_back=held_back,
                dead=dead,
                first_error=(failed[0][1] if failed else None),
                unanswered_ids=unanswered_ids,  # at most a batch: the duplicates to expect
            )
        return unanswered

    def _measure(self, rows: Sequence[OutboxRow], confirmed: list[int], sent: int) -> None:
        """A drained batch's metrics: its size, the publishes sent, the rows confirmed, each
        one's time from its insert to its confirm (the database's clock against this machine's:
        the same clock on one machine)."""
        relay = {RELAY: self.name}
        METRICS.publish_batch.record(len(rows), relay)
        METRICS.sent.add(len(confirmed), relay)
        METRICS.amqp_operations.add(sent, _PUBLISH)
        now = datetime.now(UTC)
        done = set(confirmed)
        for row in rows:
            if row.id in done:
                METRICS.publish_latency.record(
                    max(0.0, (now - row.created_at).total_seconds()), relay
                )

    async def _publish(self, rows: Sequence[OutboxRow]) -> dict[int, PublishError | None]:
        """Publish ``rows`` (in id order) in waves, at most one row per aggregate in a wave; the
        outcome of each row sent, by id. A row missing from the answer was held back: an earlier
        row of its aggregate failed, or a row got no answer and the batch stopped."""
        pending: dict[tuple[str, str], deque[OutboxRow]] = {}
        for row in rows:
            pending.setdefault((row.aggregate_type, row.aggregate_id), deque()).append(row)
        outcomes: dict[int, PublishError | None] = {}
        while pending:
            wave = sorted((queue[0] for queue in pending.values()), key=lambda r: r.id)
            results = await self._publish_wave(wave)
            no_answer = False
            for row, outcome in zip(wave, results, strict=True):
                outcomes[row.id] = outcome
                key = (row.aggregate_type, row.aggregate_id)
                queue = pending[key]
                queue.popleft()
                if outcome is not None or not queue:
                    del pending[key]  # failed: its later rows wait for its retry
                no_answer = no_answer or isinstance(outcome, ConfirmUnknown)
            if no_answer:
                break
        return outcomes

    async def _publish_wave(self, rows: Sequence[OutboxRow]) -> list[PublishError | None]:
        """Publish ``rows`` pipelined and await every confirm (one outcome per row, in order)."""
        now = datetime.now(UTC)
        spans = []
        messages = []
        for row in rows:
            span = _tracer.start_span(
                f"publish {row.exchange}",
                context=context_from_headers(row.headers),
                kind=SpanKind.PRODUCER,
                attributes={
                    **send_attributes(
                        exchange=row.exchange,
                        routing_key=row.routing_key,
                        message_id=row.message_id,
                        publish=True,
                    ),
                    "orderflow.outbox.id": row.id,
                    "orderflow.outbox.wait_ms": (now - row.created_at).total_seconds() * 1000,
                    "orderflow.outbox.attempts": row.attempts,
                    "orderflow.aggregate_id": row.aggregate_id,
                },
            )
            headers = dict(row.headers)
            headers.pop("correlation_id", None)
            headers.update(trace_headers_of(span))
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

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


class Wakeup:
    """What a writer does after committing outbox rows: wake the relay as cheaply as possible."""

    def __init__(self, relay: OutboxRelay | None) -> None:
        self._relay = relay

    async def after_commit(
        self, conn: Conn, handed: Sequence[OutboxRow] = (), *, held_back: bool = True
    ) -> None:
        """``handed``: committed rows the writer may hand over (no earlier row of their
        aggregate was pending); ``held_back``: some committed rows were not among them."""
        if self._relay is not None and self._relay.is_leader:
            if not handed or not self._relay.hand(handed) or held_back:
                self._relay.wake()
            return
        # Payload-free and outside the writer's transaction: it takes no commit-time lock.
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


def _lock_key(name: str) -> str:
    return f"orderflow.relay:{name}"


async def leader(conn: Conn, name: str) -> dict[str, Any] | None:
    """Who leads relay ``name`` in this database: the listener session holding its lock (its
    application name says host and process), since when; None while nobody leads."""
    row = await conn.fetchrow(
        """SELECT a.application_name, a.pid, a.backend_start,
                  host(a.client_addr) AS client_addr, a.client_port
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.objid::bigint = (hashtext($1)::bigint & 4294967295)""",
        _lock_key(name),
    )
    return dict(row) if row else None
