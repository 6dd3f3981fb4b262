"""The outbox table: what a service has committed to send and not yet sent.

Guarantees:
- ``OutboxWriter`` writes rows on the caller's connection, so they commit or roll back with the
  caller's state change; the trace context current at ``add`` time is stored with the row.
- ``claim`` takes unpublished rows in id order with ``FOR UPDATE SKIP LOCKED`` inside the caller's
  transaction. It never tails by ``id > last_seen``: a row whose transaction commits after a
  higher id is still claimed by the next pass. A row held back by a retry delay holds back the
  later rows of its aggregate, so per-aggregate order survives a failed publish (the relay, for
  its part, publishes a batch in waves so that a failure inside a batch cannot let a later row of
  the same aggregate through either: see ``libs.outbox.relay``). A dead row holds nothing back.
- Rows are marked published only by ``mark_published``, which the relay calls after confirms.
- After ``max_attempts`` failed publishes a row is *dead*: kept, listed, replayable, never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from libs.messages import codec
from libs.messages.envelope import Envelope
from libs.observability.tracing import current_trace_headers
from libs.pg.migrations import Migration, load
from libs.pg.pool import Conn


def migrations() -> list[Migration]:
    return load("libs.outbox", "outbox")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed row, ready to publish."""

    id: int
    message_id: str
    message_type: str
    aggregate_type: str
    aggregate_id: str
    exchange: str
    routing_key: str
    payload: bytes
    headers: dict[str, Any]
    created_at: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadRow:
    id: int
    message_id: str
    message_type: str
    exchange: str
    routing_key: str
    attempts: int
    last_error: str | None
    created_at: datetime
    dead_at: datetime
    payload: bytes


@dataclass(slots=True)
class OutboxWriter:
    """Collects outgoing messages during one transaction and writes them in one statement.

    After :meth:`flush`, ``flushed`` holds the rows written (with their ids) that no earlier
    pending row of their aggregate holds back, ready to be handed to the in-process relay once
    the transaction commits; ``held_back`` says whether some row was left to the relay's claim
    (an earlier row of its aggregate was still unpublished when it was written)."""

    pending: list[tuple[Any, ...]] = field(default_factory=list)
    flushed: list[OutboxRow] = field(default_factory=list)
    held_back: bool = False

    def add(
        self,
        envelope: Envelope,
        *,
        exchange: str,
        aggregate_type: str,
        aggregate_id: str,
        routing_key: str | None = None,
    ) -> None:
        trace = current_trace_headers()
        if trace and envelope.traceparent is None:
            envelope = envelope.with_trace(trace.get("traceparent"), trace.get("tracestate"))
        headers: dict[str, Any] = dict(trace)
        if envelope.correlationid:
            headers["correlation_id"] = envelope.correlationid
        self.pending.append(
            (
                envelope.id,
                envelope.type,
                aggregate_type,
                aggregate_id,
                exchange,
                routing_key or envelope.type,
                codec.encode(envelope),
                headers,
            )
        )

    async def flush(self, conn: Conn) -> int:
        """Insert what was added; call inside the caller's transaction, before commit."""
        if not self.pending:
            return 0
        columns = list(zip(*self.pending, strict=True))
        # One statement: the insert, and for each new row whether an earlier row of its
        # aggregate is still unpublished (the outer query does not see the rows being inserted)
        written = await conn.fetch(_INSERT, *columns)
        ready: list[OutboxRow] = []
        for record, row in zip(written, self.pending, strict=True):
            if record["message_id"] != str(row[0]).lower():
                # RETURNING gave the rows in another order: let the relay claim them all
                ready.clear()
                self.held_back = True
                break
            if record["held"]:
                self.held_back = True
                continue
            (_, message_type, aggregate_type, aggregate_id, exchange, key, payload,
             headers) = row  # fmt: skip
            ready.append(
                OutboxRow(
                    id=record["id"],
                    message_id=record["message_id"],
                    message_type=message_type,
                    aggregate_type=aggregate_type,
                    aggregate_id=aggregate_id,
                    exchange=exchange,
                    routing_key=key,
                    payload=payload,
                    headers=headers,
                    created_at=record["created_at"],
                    attempts=0,
                )
            )
        self.flushed += ready
        count = len(self.pending)
        self.pending.clear()
        return count


_INSERT = """
WITH new AS (
    INSERT INTO outbox (message_id, message_type, aggregate_type, aggregate_id,
                        exchange, routing_key, payload, headers)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                         $5::text[], $6::text[], $7::bytea[], $8::jsonb[])
    RETURNING id, message_id, aggregate_type, aggregate_id, created_at)
SELECT n.id, n.message_id::text AS message_id, n.created_at,
       EXISTS (SELECT 1 FROM outbox h
                WHERE h.aggregate_type = n.aggregate_type AND h.aggregate_id = n.aggregate_id
                  AND h.published_at IS NULL AND h.dead_at IS NULL AND h.id < n.id) AS held
  FROM new n ORDER BY n.id
"""


_CLAIM = """
SELECT id, message_id::text, message_type, aggregate_type, aggregate_id, exchange, routing_key,
       payload, headers, created_at, attempts
  FROM outbox o
 WHERE published_at IS NULL AND dead_at IS NULL AND available_at <= clock_timestamp()
   AND NOT EXISTS (
       SELECT 1 FROM outbox h
        WHERE h.aggregate_type = o.aggregate_type AND h.aggregate_id = o.aggregate_id
          AND h.published_at IS NULL AND h.dead_at IS NULL
          AND h.id < o.id AND h.available_at > clock_timestamp())
 ORDER BY id
 LIMIT $1
   FOR UPDATE SKIP LOCKED
"""


async def claim(conn: Conn, *, limit: int) -> list[OutboxRow]:
    """Lock and return up to ``limit`` publishable rows, oldest first (inside a transaction)."""
    records = await conn.fetch(_CLAIM, limit)
    return [OutboxRow(**dict(r)) for r in records]


async def mark_published(conn: Conn, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute(
            "UPDATE outbox SET published_at = clock_timestamp(), last_error = NULL "
            "WHERE id = ANY($1::bigint[])",
            list(ids),
        )


async def mark_failed(
    conn: Conn, failures: Sequence[tuple[int, str, float]], *, max_attempts: int
) -> int:
    """Record failed publishes ``(id, error, delay)``: each row is claimable again ``delay``
    seconds from now (the relay computes it with :func:`libs.backoff.delay` from the row's
    attempts) and is dead after ``max_attempts``.

    Returns how many rows became dead.
    """
    if not failures:
        return 0
    ids, errors, delays = zip(*failures, strict=True)
    dead = await conn.fetchval(
        """WITH f AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[])
                                 AS f(id, err, delay)),
                u AS (
                UPDATE outbox o
                   SET attempts = o.attempts + 1,
                       last_error = left(f.err, 2000),
                       available_at = clock_timestamp() + make_interval(secs => f.delay),
                       dead_at = CASE WHEN o.attempts + 1 >= $4 THEN clock_timestamp() END
                  FROM f WHERE o.id = f.id
             RETURNING o.dead_at)
           SELECT count(*) FILTER (WHERE dead_at IS NOT NULL) FROM u""",
        list(ids),
        list(errors),
        [float(d) for d in delays],
        max_attempts,
    )
    return int(dead)


async def list_dead(conn: Conn, *, limit: int = 100) -> list[DeadRow]:
    records = await conn.fetch(
        """SELECT id, message_id::text, message_type, exchange, routing_key, attempts,
                  last_error, created_at, dead_at, payload
             FROM outbox WHERE dead_at IS NOT NULL ORDER BY id LIMIT $1""",
        limit,
    )
    return [DeadRow(**dict(r)) for r in records]


async def replay_dead(conn: Conn, *, ids: Sequence[int] | None = None) -> int:
    """Give dead rows (all, or these ids) a fresh set of attempts; the relay publishes them."""
    status = await conn.execute(
        """UPDATE outbox SET dead_at = NULL, attempts = 0, available_at = clock_timestamp()
            WHERE dead_at IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))""",
        list(ids) if ids is not None else None,
    )
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return int(status.split()[-1])


async def purge_dead(conn: Conn, *, ids: Sequence[int] | None = None) -> int:
    status = await conn.execute(
        """DELETE FROM outbox
            WHERE dead_at IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))""",
        list(ids) if ids is not None else None,
    )
    return int(status.split()[-1])


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    oldest_pending_seconds: float | None
    dead: int


async def stats(conn: Conn) -> OutboxStats:
    """Pending rows, the oldest one's age, dead rows: read through the partial indexes of
    pending and dead rows, never the published ones (which retention keeps for a while)."""
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM outbox
                    WHERE published_at IS NULL AND dead_at IS NULL) AS pending,
                  (SELECT extract(epoch FROM clock_timestamp() - min(created_at)) FROM outbox
                    WHERE published_at IS NULL AND dead_at IS NULL) AS oldest,
                  (SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL) AS dead"""
    )
    assert row is not None
    oldest = row["oldest"]
    return OutboxStats(
        pending=row["pending"],
        oldest_pending_seconds=float(oldest) if oldest is not None else None,
        dead=row["dead"],
    )


async def prune_published(conn: Conn, *, older_than_seconds: float, limit: int = 1000) -> int:
    """Delete up to ``limit`` rows published more than ``older_than_seconds`` ago (oldest
    first); how many were deleted."""
    status = await conn.execute(
        """DELETE FROM outbox WHERE id IN (
               SELECT id FROM outbox
                WHERE published_at < now() - make_interval(secs => $1)
                ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
        older_than_seconds,
        limit,
    )
    return int(status.split()[-1])


NOTIFY_CHANNEL = "orderflow_outbox"


async def check_tables(conn: Conn, *, examples: int = 3) -> dict[str, list[dict[str, Any]]]:
    """For checks: the counts of pending and dead rows, and the first ``examples`` of each."""
    return {
        "outbox": [
            dict(r)
            for r in await conn.fetch(
                """SELECT count(*) FILTER (WHERE published_at IS NULL AND dead_at IS NULL) AS pending,
                          count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead FROM outbox"""
            )
        ],
        "outbox_pending": [
            dict(r)
            for r in await conn.fetch(
                """SELECT aggregate_type, aggregate_id, message_type,
                          round(extract(epoch FROM clock_timestamp() - created_at)::numeric, 1) AS age
                     FROM outbox WHERE published_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT $1""",
                examples,
            )
        ],
        "outbox_dead": [
            dict(r)
            for r in await conn.fetch(
                """SELECT aggregate_type, aggregate_id, message_type, last_error
                     FROM outbox WHERE dead_at IS NOT NULL ORDER BY id LIMIT $1""",
                examples,
            )
        ],
    }
