"""The idempotent-consumer record: one row per (consumer, message id) processed.

The row is inserted in the same transaction as the handler's state change and outbox rows.
``ON CONFLICT DO NOTHING`` makes a duplicate a no-op that the caller recognises (``claim`` returns
False), rolls back, and acks: the message's effect exists exactly once, however often it arrives.
"""

from __future__ import annotations

from typing import Any

from libs.pg.migrations import Migration, load
from libs.pg.pool import Conn


def migrations() -> list[Migration]:
    return load("libs.inbox", "inbox")


async def claim(conn: Conn, *, consumer: str, message_id: str, message_type: str) -> bool:
    """Record the message as processed by ``consumer``; False when it already was."""
    inserted = await conn.fetchval(
        """INSERT INTO inbox (consumer, message_id, message_type) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""",
        consumer,
        message_id,
        message_type,
    )
    return bool(inserted)


async def count(conn: Conn, *, consumer: str | None = None) -> int:
    if consumer is None:
        return int(await conn.fetchval("SELECT count(*) FROM inbox"))
    return int(await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = $1", consumer))


async def prune(conn: Conn, *, older_than_seconds: float, limit: int = 1000) -> int:
    """Forget up to ``limit`` records older than ``older_than_seconds``, oldest first: the
    horizon must be longer than any redelivery can take (a copy arriving after its record is
    gone would be processed again)."""
    status = await conn.execute(
        """DELETE FROM inbox WHERE (consumer, message_id) IN (
               SELECT consumer, message_id FROM inbox
                WHERE processed_at < now() - make_interval(secs => $1)
                ORDER BY processed_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
        older_than_seconds,
        limit,
    )
    return int(status.split()[-1])


async def forget(conn: Conn, *, consumer: str, message_id: str) -> None:
    """Undo a claim within its transaction (a message that will be dead-lettered instead, so
    that replaying it later is processed, not taken for a duplicate)."""
    await conn.execute(
        "DELETE FROM inbox WHERE consumer = $1 AND message_id = $2", consumer, message_id
    )


async def claim_many(conn: Conn, *, consumer: str, messages: list[tuple[str, str]]) -> set[str]:
    """Record many (message id, type) pairs at once; returns the ids that were new.

    An id listed twice, or already recorded, is returned at most once: its first occurrence is
    the one to process.
    """
    if not messages:
        return set()
    ids, types = zip(*messages, strict=True)
    rows = await conn.fetch(
        """INSERT INTO inbox (consumer, message_id, message_type)
           SELECT $1, m.id, m.type FROM unnest($2::uuid[], $3::text[]) AS m(id, type)
           ORDER BY m.id  -- one order for every batch: two overlapping ones cannot deadlock
           ON CONFLICT DO NOTHING RETURNING message_id::text""",
        consumer,
        list(ids),
        list(types),
    )
    return {r["message_id"] for r in rows}


async def counts_by_type(conn: Conn) -> list[dict[str, Any]]:
    """(consumer, message type, n) for every pair recorded."""
    rows = await conn.fetch(
        "SELECT consumer, message_type, count(*) AS n FROM inbox GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return [dict(r) for r in rows]


async def missing(conn: Conn, *, consumer: str, message_ids: list[str]) -> set[str]:
    """Which of these message ids ``consumer`` has no record of."""
    rows = await conn.fetch(
        """SELECT m::text AS id FROM unnest($2::uuid[]) AS m
            WHERE NOT EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = $1 AND i.message_id = m)""",
        consumer,
        message_ids,
    )
    return {r["id"] for r in rows}
