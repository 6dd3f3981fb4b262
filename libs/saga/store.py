"""Saga instances and their log in PostgreSQL.

An instance row is read ``FOR UPDATE`` inside the transaction of the message (or deadline) that
moves it, so two coordinator replicas never apply transitions to one instance at once; ``version``
is checked on update as a second guard. The log is append-only: one row per transition entry.
Deadlines are a column, claimed with ``FOR UPDATE SKIP LOCKED`` by whichever replica's timer
fires first; an instance held by another transaction is skipped, not waited for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from libs.errors import ConcurrencyConflict
from libs.pg.migrations import Migration, load
from libs.pg.pool import Conn
from libs.saga.state import LogEntry, SagaState


def migrations() -> list[Migration]:
    return load("libs.saga", "saga")


@dataclass(frozen=True, slots=True)
class Loaded:
    state: SagaState
    traceparent: str | None


# The log rows of a transition, written only if the instance row was (CTE `written`); the
# parameters $1 saga, $2 id, $3 status, $10 trace id, $11-$13 the entries' columns.
_LOG_ROWS = """
               INSERT INTO saga_log (saga, saga_id, event, step, status, detail, trace_id)
               SELECT $1, $2, e.event, e.step, $3, e.detail::jsonb, $10
                 FROM unnest($11::text[], $12::text[], $13::text[]) AS e(event, step, detail)
                WHERE EXISTS (SELECT 1 FROM {written})"""


def _instance_columns(saga: str, state: SagaState) -> tuple[object, ...]:
    """$1-$8 of the instance statements: saga, id, status, step, attempt, state, version,
    deadline."""
    return (
        saga,
        state.id,
        state.status.value,
        state.step,
        state.attempt,
        state.to_json(),
        state.version,
        state.deadline_at,
    )


def _log_columns(entries: tuple[LogEntry, ...]) -> tuple[list[str], list[str | None], list[str]]:
    return (
        [e.event for e in entries],
        [e.step for e in entries],
        [json.dumps(e.detail, default=str) for e in entries],
    )


async def insert(
    conn: Conn,
    *,
    saga: str,
    state: SagaState,
    traceparent: str | None,
    entries: tuple[LogEntry, ...] = (),
    trace_id: str | None = None,
) -> bool:
    """Create the instance and log its first entries (one statement); False when it existed."""
    created = await conn.fetchval(
        f"""WITH i AS (
               INSERT INTO saga_instance (saga, id, status, step, attempt, state, version,
                                          deadline_at, traceparent)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING 1),
           l AS ({_LOG_ROWS.format(written="i")})
           SELECT count(*) FROM i""",
        *_instance_columns(saga, state),
        traceparent,
        trace_id,
        *_log_columns(entries),
    )
    return bool(created)


async def save_transition(
    conn: Conn,
    *,
    saga: str,
    state: SagaState,
    previous_version: int,
    entries: tuple[LogEntry, ...],
    trace_id: str | None,
) -> datetime:
    """Update the instance (if its version is still ``previous_version``) and append its log
    entries in one statement: one round trip per transition instead of two. Returns when the
    instance was created."""
    created_at: datetime | None = await conn.fetchval(
        f"""WITH u AS (
               UPDATE saga_instance
                  SET status = $3, step = $4, attempt = $5, state = $6, version = $7,
                      deadline_at = $8, updated_at = clock_timestamp()
                WHERE saga = $1 AND id = $2 AND version = $9
            RETURNING created_at),
           l AS ({_LOG_ROWS.format(written="u")})
           SELECT (SELECT created_at FROM u)""",
        *_instance_columns(saga, state),
        previous_version,
        trace_id,
        *_log_columns(entries),
    )
    if created_at is None:
        raise ConcurrencyConflict(
            f"saga {saga}/{state.id} changed under us (version {previous_version})"
        )
    return created_at


async def load_for_update(conn: Conn, *, saga: str, saga_id: str) -> Loaded | None:
    row = await conn.fetchrow(
        "SELECT state, traceparent FROM saga_instance WHERE saga = $1 AND id = $2 FOR UPDATE",
        saga,
        saga_id,
    )
    if row is None:
        return None
    return Loaded(SagaState.from_json(row["state"]), row["traceparent"])


async def load_many_for_update(conn: Conn, *, saga: str, ids: list[str]) -> dict[str, Loaded]:
    """The instances with these ids, locked in id order (two batches cannot deadlock on them),
    in one round trip."""
    rows = await conn.fetch(
        """SELECT id, state, traceparent FROM saga_instance
            WHERE saga = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE""",
        saga,
        ids,
    )
    return {r["id"]: Loaded(SagaState.from_json(r["state"]), r["traceparent"]) for r in rows}


async def append_log(
    conn: Conn, *, saga: str, state: SagaState, entries: tuple[LogEntry, ...], trace_id: str | None
) -> None:
    """Log entries of a transition that changed nothing (ignored input)."""
    if not entries:
        return
    await conn.execute(
        """INSERT INTO saga_log (saga, saga_id, event, step, status, detail, trace_id)
           SELECT $1, $2, e.event, e.step, $3, e.detail::jsonb, $4
             FROM unnest($5::text[], $6::text[], $7::text[]) AS e(event, step, detail)""",
        saga,
        state.id,
        state.status.value,
        trace_id,
        *_log_columns(entries),
    )


async def claim_due(conn: Conn, *, saga: str, now: datetime, limit: int) -> list[Loaded]:
    """Lock instances whose deadline passed (inside a transaction)."""
    rows = await conn.fetch(
        """SELECT state, traceparent FROM saga_instance
            WHERE saga = $1 AND deadline_at <= $2
            ORDER BY deadline_at LIMIT $3 FOR UPDATE SKIP LOCKED""",
        saga,
        now,
        limit,
    )
    return [Loaded(SagaState.from_json(r["state"]), r["traceparent"]) for r in rows]


async def next_deadline(conn: Conn, *, saga: str) -> tuple[datetime | None, bool]:
    """(the earliest deadline still to come, whether any is past already). A past one that
    :func:`claim_due` did not claim is held by another transaction: the timer pauses for it
    rather than wake at once, yet still wakes on time for the others
    (``SagaCoordinator.run_timers``)."""
    row = await conn.fetchrow(
        """SELECT min(deadline_at) FILTER (WHERE deadline_at > clock_timestamp()) AS next,
                  coalesce(bool_or(deadline_at <= clock_timestamp()), false) AS overdue
             FROM saga_instance WHERE saga = $1 AND deadline_at IS NOT NULL""",
        saga,
    )
    upcoming = row["next"] if row is not None else None
    return (upcoming if isinstance(upcoming, datetime) else None), bool(row and row["overdue"])


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: str
    status: str
    step: str | None
    attempt: int
    deadline_at: datetime | None
    created_at: datetime
    updated_at: datetime
    traceparent: str | None
    state: dict[str, Any]


async def list_instances(
    conn: Conn,
    *,
    saga: str,
    status: str | None = None,
    stuck_before: datetime | None = None,
    limit: int = 50,
) -> list[InstanceRow]:
    rows = await conn.fetch(
        """SELECT id, status, step, attempt, deadline_at, created_at, updated_at, traceparent, state
             FROM saga_instance
            WHERE saga = $1 AND ($2::text IS NULL OR status = $2)
              AND ($3::timestamptz IS NULL OR deadline_at < $3)
            ORDER BY created_at DESC LIMIT $4""",
        saga,
        status,
        stuck_before,
        limit,
    )
    return [InstanceRow(**dict(r)) for r in rows]


async def get_instance(conn: Conn, *, saga: str, saga_id: str) -> InstanceRow | None:
    row = await conn.fetchrow(
        """SELECT id, status, step, attempt, deadline_at, created_at, updated_at, traceparent, state
             FROM saga_instance WHERE saga = $1 AND id = $2""",
        saga,
        saga_id,
    )
    return InstanceRow(**dict(row)) if row else None


@dataclass(frozen=True, slots=True)
class LogRow:
    id: int
    at: datetime
    event: str
    step: str | None
    status: str
    detail: dict[str, Any]
    trace_id: str | None


async def timeline(conn: Conn, *, saga: str, saga_id: str) -> list[LogRow]:
    rows = await conn.fetch(
        """SELECT id, at, event, step, status, detail, trace_id FROM saga_log
            WHERE saga = $1 AND saga_id = $2 ORDER BY id""",
        saga,
        saga_id,
    )
    return [LogRow(**dict(r)) for r in rows]


async def count_by_status(conn: Conn, *, saga: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM saga_instance WHERE saga = $1 GROUP BY status", saga
    )
    return {r["status"]: r["n"] for r in rows}


async def prune_finished(
    conn: Conn, *, saga: str, older_than_seconds: float, limit: int = 1000
) -> int:
    """Delete up to ``limit`` instances of ``saga`` that ended more than ``older_than_seconds``
    ago, with their log; how many instances were deleted. Instances still running are never
    touched, nor one a transaction holds (a late reply appending to its log): it is left for
    the next round, so no log row outlives its instance."""
    deleted = 0
    for status in ("COMPLETED", "COMPENSATED"):  # one status at a time: (status, updated_at)
        if deleted >= limit:
            break
        gone = await conn.fetchval(
            """WITH gone AS (
                   DELETE FROM saga_instance WHERE (saga, id) IN (
                       SELECT saga, id FROM saga_instance
                        WHERE status = $4 AND updated_at < now() - make_interval(secs => $1)
                          AND saga = $3
                        ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                   RETURNING saga, id),
               logs AS (
                   DELETE FROM saga_log l USING gone g
                    WHERE l.saga = g.saga AND l.saga_id = g.id)
               SELECT count(*) FROM gone""",
            older_than_seconds,
            limit - deleted,
            saga,
            status,
        )
        deleted += int(gone or 0)
    return deleted


async def gauges(conn: Conn, *, saga: str) -> list[tuple[str, dict[str, str], float]]:
    """The saga's gauges: instances in flight by status and step, those past their deadline,
    those *stuck* (past their deadline, or re-sending a command nobody answered: a participant
    is not replying), and the age of the oldest (0 when none is in flight)."""
    rows = await conn.fetch(
        """SELECT status, coalesce(step, '') AS step, count(*) AS n,
                  count(*) FILTER (WHERE deadline_at < clock_timestamp()) AS overdue,
                  count(*) FILTER (WHERE attempt > 1 OR deadline_at < clock_timestamp()) AS stuck,
                  extract(epoch FROM clock_timestamp() - min(created_at)) AS oldest
             FROM saga_instance
            WHERE saga = $1 AND status IN ('RUNNING', 'COMPENSATING')
            GROUP BY 1, 2""",
        saga,
    )
    named = {"orderflow.saga": saga}
    series: list[tuple[str, dict[str, str], float]] = [
        (
            "orderflow.saga.in_flight",
            {**named, "orderflow.saga.status": r["status"], "orderflow.saga.step": r["step"]},
            r["n"],
        )
        for r in rows
    ]
    series.append(("orderflow.saga.overdue", named, sum(r["overdue"] for r in rows)))
    series.append(("orderflow.saga.stuck", named, sum(r["stuck"] for r in rows)))
    oldest = max((float(r["oldest"]) for r in rows), default=0.0)
    series.append(("orderflow.saga.oldest", named, oldest))
    return series
