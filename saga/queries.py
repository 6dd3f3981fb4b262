"""What operators may read from the saga's database beyond :mod:`libs.saga.store`: the only place
outside saga that knows how its log is read for checks and chaos reports."""

from __future__ import annotations

from typing import Any

from libs.pg import Conn
from saga.domain.order_saga import NAME, order_saga

__all__ = ["check_tables", "race_counts", "resent_messages"]


async def check_tables(
    conn: Conn, *, grace: float = 2.0, **_: Any
) -> dict[str, list[dict[str, Any]]]:
    """The order saga's instances (overdue: past the deadline by more than ``grace`` seconds),
    and the re-sends logged since each unfinished instance entered its current state."""
    sagas = await conn.fetch(
        """SELECT id, status, step, attempt,
                  deadline_at < clock_timestamp() - make_interval(secs => $2) AS overdue
             FROM saga_instance WHERE saga = $1""",
        NAME,
        float(grace),
    )
    resends = await conn.fetch(
        """SELECT l.saga_id, count(*) AS n
             FROM saga_log l JOIN saga_instance i
               ON i.saga = l.saga AND i.id = l.saga_id AND i.status = l.status
            WHERE l.saga = $1 AND i.status NOT IN ('COMPLETED', 'COMPENSATED')
              AND l.event IN ('retry', 'operator_retry')
            GROUP BY l.saga_id""",
        NAME,
    )
    return {"sagas": [dict(r) for r in sagas], "resend_counts": [dict(r) for r in resends]}


async def race_counts(conn: Conn) -> dict[str, int]:
    """How often the saga re-sent a command, gave up on a step at its deadline, and ignored a
    late reply to a first command (what replicas racing on orders leave in the log)."""
    steps = order_saga().steps
    first_replies = sorted(
        {s.success.TYPE for s in steps} | {s.failure.TYPE for s in steps if s.failure}
    )
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE event = 'retry') AS resent,
                  count(*) FILTER (WHERE event = 'timed_out') AS given_up,
                  count(*) FILTER (WHERE event = 'ignored'
                                     AND detail->>'type' = ANY($1::text[])) AS late
             FROM saga_log""",
        first_replies,
    )
    assert row is not None
    return dict(row)


async def resent_messages(conn: Conn) -> dict[str, int]:
    """Per message id, how many times the saga sent that command again (on its deadline or an
    operator's retry): each re-send carries the first one's id, so an inbox absorbs it."""
    rows = await conn.fetch(
        """SELECT detail->>'message_id' AS message_id, count(*) AS n FROM saga_log
            WHERE saga = $1 AND event IN ('retry', 'operator_retry')
              AND detail ? 'message_id'
            GROUP BY 1""",
        NAME,
    )
    return {r["message_id"]: r["n"] for r in rows}
