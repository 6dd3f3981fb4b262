"""Where one hop's wall time goes, in every service process: a measuring aid, not product code.

    OF_HOP_TIMING=1 PYTHONPATH=scripts/hop_timing \
        uv run python scripts/cpu_split.py --rate 10 --seconds 20

Python imports ``sitecustomize`` at start-up when it is on the path, so with the variable set each
service process (order_svc, payment_svc, inventory_svc, saga; nothing else) wraps the steps of
the handling path — reading a delivery, the transaction, each statement, the hand-off to the
relay, the publish until confirmed, the ack — with wall-clock timers, and writes their medians to
``var/hop-timing-<service>-<pid>.txt`` when it exits. The wrappers add a few microseconds a step.
"""

from __future__ import annotations

import atexit
import functools
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

SERVICES = ("order_svc", "payment_svc", "inventory_svc", "saga")
ROOT = Path(__file__).resolve().parents[2]
timings: defaultdict[str, list[float]] = defaultdict(list)
marks: dict[str, Any] = {}


def _service() -> str | None:
    words = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    return next((w.decode() for w in words if w.decode() in SERVICES), None)


def _timed(owner: Any, name: str, label: str) -> None:
    """Replace the coroutine function ``owner.name`` with one that records its wall time."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            timings[label].append((time.perf_counter() - started) * 1000)

    setattr(owner, name, timed)


def _before(owner: Any, name: str, hook: Callable[[], None]) -> None:
    """Call ``hook`` whenever the coroutine function ``owner.name`` starts."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def hooked(*args: Any, **kwargs: Any) -> Any:
        hook()
        return await original(*args, **kwargs)

    setattr(owner, name, hooked)


def _install() -> None:
    import asyncpg.connection

    from libs.inbox import store as inbox
    from libs.messaging import consumer
    from libs.outbox import relay, store
    from libs.service import runner

    def statements(original: Any, *, timed_elsewhere: bool) -> Any:
        """``original`` (a Connection method taking the query first), timed per statement;
        ``timed_elsewhere``: a call with arguments goes through ``_execute``, timed there."""

        async def statement(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if timed_elsewhere and args:
                return await original(self, query, *args, **kwargs)
            started = time.perf_counter()
            try:
                return await original(self, query, *args, **kwargs)
            finally:
                words = " ".join(query.split()[:4])[:40]
                timings[f"  statement: {words}"].append((time.perf_counter() - started) * 1000)

        return statement

    connection = asyncpg.connection.Connection
    connection._execute = statements(connection._execute, timed_elsewhere=False)  # type: ignore[method-assign]
    connection.execute = statements(connection.execute, timed_elsewhere=True)  # type: ignore[method-assign]

    def arrived() -> None:
        marks.setdefault("arrived", []).append(time.perf_counter())

    def batch_started() -> None:
        now = time.perf_counter()
        for at in marks.pop("arrived", []):
            timings["delivery arrived → its batch starts"].append((now - at) * 1000)

    def handed() -> None:
        marks["handed"] = time.perf_counter()

    def publishing() -> None:
        if "handed" in marks:
            since = time.perf_counter() - marks.pop("handed")
            timings["committed rows handed → relay publishes"].append(since * 1000)

    _before(consumer.QueueConsumer, "_on_message", arrived)
    _before(runner.MessageRunner, "process_batch", batch_started)
    _before(relay.Wakeup, "after_commit", handed)
    _before(relay.OutboxRelay, "_publish_wave", publishing)
    _timed(runner.MessageRunner, "process_batch", "a batch, from reading to acked")
    _timed(runner.MessageRunner, "_commit", "the transaction (acquire → commit → release)")
    _timed(runner.MessageRunner, "_handle", "  the handler")
    _timed(runner.MessageRunner, "_finish", "settling (ack)")
    _timed(relay.OutboxRelay, "_publish_wave", "relay: publish until confirmed")
    _timed(store.OutboxWriter, "flush", "  outbox rows written")
    _timed(inbox, "claim_many", "  inbox rows claimed")
    read = runner.MessageRunner._open

    def timed_open(self: Any, delivery: Any) -> Any:
        started = time.perf_counter()
        try:
            return read(self, delivery)
        finally:
            timings["reading a delivery (decode, validate, span)"].append(
                (time.perf_counter() - started) * 1000
            )

    runner.MessageRunner._open = timed_open  # type: ignore[method-assign]


def _write(service: str) -> None:
    out = ROOT / "var" / f"hop-timing-{service}-{os.getpid()}.txt"
    out.parent.mkdir(exist_ok=True)
    lines = [
        f"{label:50s} n={len(values):6d}  p50 {statistics.median(values):7.3f} ms"
        f"  mean {statistics.fmean(values):7.3f} ms"
        for label, values in sorted(timings.items(), key=lambda kv: kv[0].strip())
    ]
    out.write_text("\n".join(lines) + "\n")


_name = _service() if os.environ.get("OF_HOP_TIMING") else None
if _name is not None:
    sys.path.insert(0, str(ROOT))
    _install()
    atexit.register(_write, _name)
