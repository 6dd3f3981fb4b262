"""A service process's HTTP face: ``/metrics`` (Prometheus), ``/livez`` and ``/readyz``.

``/livez`` answers 200 while the process's loops are alive: the event loop answers, and none of
its long-running tasks (relay, consumer workers, timers, probes) has died. A 503 means restart me.

``/readyz`` answers 200 while the process can do its work: the database answered one of the
last two probes (``SELECT 1``, every second, within a second), the broker connection is up,
every consumer's channel is open, and the relay (if it runs one) is leading or standing by. It
turns 503 within about two seconds of losing the broker and four of losing the database, and
back to 200 once they answer.
The body says which check failed, as JSON; it carries no secret and no order data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from libs.observability.logging import get_logger
from libs.observability.metrics import METRICS, exposition

__all__ = ["Health", "HttpServer"]

log = get_logger(__name__)
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 1.0


@dataclass
class Health:
    """The checks behind ``/readyz`` (each a name and a function saying "ok" or why not) and the
    tasks behind ``/livez``."""

    checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    workers: list[asyncio.Task[Any]] = field(default_factory=list)
    database_ok: bool = False
    stopping: bool = False

    def ready(self) -> dict[str, str]:
        """Each check's answer: ``ok`` or what is wrong."""
        answers = {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # a check that breaks says so, it does not crash /readyz
                problem = f"{type(exc).__name__}: {exc}"
            answers[name] = problem or "ok"
        if self.stopping:
            answers["process"] = "stopping"
        return answers

    def live(self) -> dict[str, str]:
        dead = {
            t.get_name(): _how_it_ended(t)
            for t in (*self.tasks, *self.workers)
            if t.done() and not self.stopping
        }
        return dead or {"loops": "ok"}

    async def probe_database(self, pool: Any, stopping: asyncio.Event) -> None:
        """``SELECT 1`` every second; ``database_ok`` turns False after two probes in a row
        failed (one slow answer from a busy pool is no outage) and True at the first answer."""
        failures = 0
        while not stopping.is_set():
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    async with pool.acquire() as conn:
                        await conn.fetchval("SELECT 1")
                failures = 0
            except Exception:
                failures += 1
            self.database_ok = failures < 2
            METRICS.gauges.set("orderflow.database.up", int(self.database_ok))
            answers = self.ready()  # the gauges say what /readyz would say now
            METRICS.gauges.set("orderflow.broker.connected", int(answers.get("broker") == "ok"))
            METRICS.gauges.set("orderflow.ready", int(set(answers.values()) == {"ok"}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PROBE_INTERVAL)


def _how_it_ended(task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return f"died: {type(error).__name__}" if error else "returned"


class HttpServer:
    """``/metrics``, ``/livez`` and ``/readyz`` on one port (0: any free port)."""

    def __init__(self, health: Health, *, host: str, port: int) -> None:
        self._health = health
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, port_file: Path | None = None) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if port_file is not None:
            await asyncio.to_thread(port_file.write_text, str(self.port))
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        body = exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _livez(self, _: web.Request) -> web.Response:
        answers = self._health.live()
        return _json(answers, ok=answers == {"loops": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        answers = self._health.ready()
        return _json(answers, ok=all(v == "ok" for v in answers.values()))


def _json(answers: dict[str, str], *, ok: bool) -> web.Response:
    return web.Response(
        status=200 if ok else 503,
        text=json.dumps(answers, sort_keys=True),
        content_type="application/json",
    )
