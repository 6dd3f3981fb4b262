"""The unit of work: one transaction's state change and the messages it sends, committed together.

Every writer of the system goes through it — message handlers (one message or a batch), the
saga and its deadline timer, operator actions, benchmarks and tests::

    async with unit_of_work(conn, wakeup) as uow:
        ...                                   # reads and writes on uow.conn
        uow.add(envelope, exchange="order.events", aggregate_type="order", aggregate_id=oid)
    # committed: the messages are outbox rows of the same transaction, handed to the relay

An exception inside rolls the transaction back and sends nothing. The outbox rows are written in
one statement just before the commit; after it, ``wakeup`` hands them to the relay when this
process holds the relay's lead (it publishes them without claiming them), else sends a
payload-free NOTIFY outside the transaction, which takes no commit-time lock. ``wake=False``
leaves the rows to the relay's sweep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from libs.observability.logging import get_logger
from libs.outbox.relay import Wakeup
from libs.outbox.store import OutboxWriter
from libs.pg.pool import Conn

__all__ = ["UnitOfWork", "unit_of_work"]

log = get_logger(__name__)


class UnitOfWork(OutboxWriter):
    """The outbox writer of one transaction on ``conn``; ``written`` is how many rows it
    committed, once the unit of work ended."""

    def __init__(self, conn: Conn) -> None:
        super().__init__()
        self.conn = conn
        self.written = 0
        self.committed: list[Callable[[], None]] = []
        """Called once the transaction committed, never after a rollback (metrics of what the
        transaction did are recorded here, so a retried transaction is counted once)."""


@asynccontextmanager
async def unit_of_work(
    conn: Conn, wakeup: Wakeup | None = None, *, wake: bool = True
) -> AsyncIterator[UnitOfWork]:
    """A transaction on ``conn`` whose messages commit with it (see the module docstring)."""
    uow = UnitOfWork(conn)
    async with conn.transaction():
        yield uow
        uow.written = await uow.flush(conn)
    for done in uow.committed:
        try:
            done()
        except Exception:  # committed is committed: a failing callback must not look like a
            log.exception("unit_of_work.callback_failed")  # failed transaction to a retry
    if uow.written and wake:
        await (wakeup or Wakeup(None)).after_commit(conn, uow.flushed, held_back=uow.held_back)
