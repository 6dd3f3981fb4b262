"""Per-key transaction locks: the handlers of one key (one order) run one after the other.

``SELECT … FOR UPDATE`` locks nothing while a row does not exist yet, so two handlers of one new
order can both see "nothing there" and decide on conflicting writes. A participant therefore
takes its key's lock first, before it reads anything: a transaction-scoped advisory lock,
released at commit or rollback. READ COMMITTED takes a fresh snapshot per statement, so the reads
that follow the lock see what the previous holder committed.

The key: ``pg_advisory_xact_lock(class, key)``, the two-int form, with a class id per lock
(4 ASCII bytes, e.g. ``b"PAYM"``) and ``key`` a stable 32-bit BLAKE2b hash of the value (the
uuid's bytes for a uuid, else its UTF-8). The two-int key space is disjoint from the
single-bigint one, which the outbox relay's leader lock and the migrations lock use. Two values
whose keys collide (1 in 2**32) merely wait for each other.

No deadlock among these locks. A batch transaction may take several keys' locks, in message
order; two batches taking them in opposite orders could deadlock. So a transaction *waits* for a
key's lock only when it holds no other lock of that class; one that already holds some and finds
this key busy raises :class:`~libs.errors.ConcurrencyConflict` at once — the batch rolls back,
releasing its locks, and the runner handles its messages one per transaction, where waiting is
safe. Contention on one key is rare (a duplicate, a charge racing its refund), and only then is
``pg_locks`` consulted; an uncontended lock costs one round trip.

A batch's keys can be taken at once (:meth:`KeyLock.take_all`, one round trip for all of them):
each is *tried*, none waited for, and one busy key raises the same ConcurrencyConflict — the
batch is then handled one message per transaction, as above. A single key is taken as by
:meth:`KeyLock.take`, waiting if need be.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from libs.errors import ConcurrencyConflict
from libs.observability.logging import get_logger
from libs.pg.pool import Conn

log = get_logger(__name__)

__all__ = ["KeyLock"]


@dataclass(frozen=True, slots=True)
class KeyLock:
    """The transaction locks of one kind of key, e.g. ``KeyLock(b"PAYM", "order")``."""

    tag: bytes
    what: str = "key"

    @property
    def class_id(self) -> int:
        """The lock's class id: its 4-byte tag as a positive 32-bit integer."""
        if len(self.tag) != 4 or self.tag[0] >= 0x80:
            raise ValueError(f"a lock tag is 4 bytes below 0x80 first, not {self.tag!r}")
        return int.from_bytes(self.tag, "big")

    def key(self, value: str) -> int:
        """A stable signed 32-bit key for ``value``, the same on every process and version
        (not Python's salted ``hash``), and for every spelling of a uuid."""
        try:
            raw = uuid.UUID(value).bytes
        except ValueError:
            raw = value.encode()
        return int.from_bytes(hashlib.blake2b(raw, digest_size=4).digest(), "big", signed=True)

    async def take(self, conn: Conn, value: str) -> None:
        """Take ``value``'s lock in the current transaction; wait for it only when this
        transaction holds no other lock of this class (see the module docstring)."""
        cls, key = self.class_id, self.key(value)
        if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", cls, key):
            return
        holds_others = await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM pg_locks
                               WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                                 AND classid = $1::oid AND objsubid = 2)""",
            cls,
        )
        if holds_others:
            raise ConcurrencyConflict(
                f"{self.what} {value} is locked by another transaction and this one holds other "
                f"{self.what}s' locks: not waiting (no lock-order deadlock); retried one message "
                "at a time"
            )
        # a rare event, and the evidence that two handlers of one key met: logged at INFO
        log.info("lock.contended", lock=self.tag.decode(), what=self.what, key=value)
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", cls, key)

    async def take_all(self, conn: Conn, values: Iterable[str]) -> None:
        """Take the locks of all ``values`` in the current transaction, in one round trip: one
        value as :meth:`take` does; several without waiting for any — when one is busy,
        :class:`~libs.errors.ConcurrencyConflict` (whatever was taken is released when the
        transaction rolls back). Meant to be the first locks of its class a transaction takes."""
        distinct = sorted(set(values))
        if len(distinct) <= 1:
            for value in distinct:
                await self.take(conn, value)
            return
        keys = sorted({self.key(v) for v in distinct})
        busy = await conn.fetchval(
            """SELECT count(*) FROM unnest($2::int[]) AS k
                WHERE NOT pg_try_advisory_xact_lock($1, k)""",
            self.class_id,
            keys,
        )
        if busy:
            raise ConcurrencyConflict(
                f"{busy} of {len(keys)} {self.what}s of this batch are locked by another "
                "transaction: not waiting (no lock-order deadlock); retried one message at a time"
            )
