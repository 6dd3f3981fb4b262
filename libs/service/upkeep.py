"""What a service's relay leader does besides relaying: gauges sampled from its database, and
retention.

Only the process whose relay leads its database does either (an advisory lock makes it one per
database, checked again before every batch and every write of the gauges): the gauges then
describe the database once, not once per replica. Should two prune for a moment around a
change of leader, each batch skips the rows the other holds (``SKIP LOCKED``). A process that
does not lead reports none of these gauges.

Retention deletes, once per ``interval``, in batches of ``batch`` rows with a ``pause`` between
two: published outbox rows, inbox records past the redelivery horizon, ended saga instances
and their logs (each a :class:`Pruner` the service hands in). Each batch is a short transaction
of its own on a pooled connection, so the hot path never waits behind a long delete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.inbox import store as inbox_store
from libs.observability.logging import get_logger
from libs.observability.metrics import METRICS
from libs.outbox import store as outbox_store
from libs.outbox.relay import OutboxRelay
from libs.pg.pool import Conn
from libs.settings import RetentionSettings

__all__ = [
    "Pruner",
    "Sampler",
    "outbox_gauges",
    "prune_once",
    "pruners",
    "run_retention",
    "run_sampler",
]

log = get_logger(__name__)

Series = Iterable[tuple[str, Mapping[str, Any], float]]
Sampler = Callable[[Conn], Awaitable[Series]]
"""Reads gauges from the database: (gauge name, attributes, value) for each series."""
SAMPLE_INTERVAL = 5.0
_OUTBOX_GAUGES = ("orderflow.outbox.pending", "orderflow.outbox.lag", "orderflow.outbox.dead")


@dataclass(frozen=True)
class Pruner:
    """One kind of rows retention deletes: ``prune(conn, older_than_seconds=, limit=)`` deletes
    up to ``limit`` of them older than ``horizon`` seconds and says how many."""

    table: str
    horizon: float
    prune: Callable[..., Awaitable[int]]


def pruners(settings: RetentionSettings, extra: Sequence[Pruner] = ()) -> list[Pruner]:
    """The outbox's and the inbox's, then the service's own (the saga's instances)."""
    return [
        Pruner("outbox", settings.outbox, outbox_store.prune_published),
        Pruner("inbox", settings.inbox, inbox_store.prune),
        *extra,
    ]


def _leads(relay: OutboxRelay | None) -> bool:
    return relay is not None and relay.is_leader


async def prune_once(
    pool: Any,
    pruners: Sequence[Pruner],
    settings: RetentionSettings,
    leading: Callable[[], bool] = lambda: True,
) -> int:
    """One round: each pruner until it has nothing older than its horizon, or until this
    process stops leading (checked before every batch); rows deleted."""
    total = 0
    for pruner in pruners:
        while leading():
            async with pool.acquire() as conn:
                deleted = await pruner.prune(
                    conn, older_than_seconds=pruner.horizon, limit=settings.batch
                )
            total += deleted
            if deleted:
                METRICS.pruned.add(deleted, {"orderflow.table": pruner.table})
            if deleted < settings.batch:
                break
            await asyncio.sleep(settings.pause)
    return total


async def run_retention(
    pool: Any,
    relay: OutboxRelay | None,
    pruners: Sequence[Pruner],
    settings: RetentionSettings,
    stopping: asyncio.Event,
) -> None:
    """A round every ``interval`` while this process's relay leads; errors are logged and the
    next round tries again."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), settings.interval)
        if stopping.is_set() or not _leads(relay):
            continue
        try:
            deleted = await prune_once(pool, pruners, settings, lambda: _leads(relay))
        except Exception as exc:
            log.warning("retention.failed", error=f"{type(exc).__name__}: {exc}")
            continue
        if deleted:
            log.info("retention.pruned", rows=deleted)


async def outbox_gauges(conn: Conn) -> Series:
    stats = await outbox_store.stats(conn)
    return [
        ("orderflow.outbox.pending", {}, stats.pending),
        ("orderflow.outbox.lag", {}, stats.oldest_pending_seconds or 0.0),
        ("orderflow.outbox.dead", {}, stats.dead),
    ]


async def run_sampler(
    pool: Any,
    relay: OutboxRelay | None,
    samplers: Sequence[Sampler],
    stopping: asyncio.Event,
    interval: float = SAMPLE_INTERVAL,
) -> None:
    """Refresh the database gauges every ``interval`` while leading; clear them otherwise."""
    gauges = METRICS.gauges
    owned: set[str] = set(_OUTBOX_GAUGES)
    while not stopping.is_set():
        if _leads(relay):
            try:
                series: dict[str, list[tuple[Mapping[str, Any], float]]] = {}
                async with pool.acquire() as conn:
                    for sample in (outbox_gauges, *samplers):
                        for name, attributes, value in await sample(conn):
                            series.setdefault(name, []).append((attributes, value))
                if _leads(relay):  # still: a former leader must not write after the new one
                    for name in owned - set(series):
                        gauges.replace(name, [])
                    for name, values in series.items():
                        gauges.replace(name, values)
                    owned |= set(series)
            except Exception as exc:
                log.warning("metrics.sample_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            for name in owned:
                gauges.replace(name, [])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
