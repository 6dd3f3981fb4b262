"""/livez and /readyz decisions, without a server: a dead loop is not live, a failing check is
not ready, one slow database probe is no outage but two are."""

from __future__ import annotations

import asyncio
from typing import Any

from libs.service.http import Health


async def test_a_dead_worker_makes_the_process_not_live() -> None:
    async def crash() -> None:
        raise RuntimeError("boom")

    alive = asyncio.create_task(asyncio.sleep(10), name="relay")
    dead = asyncio.create_task(crash(), name="batch:queue")
    await asyncio.sleep(0)
    health = Health(tasks=[alive], workers=[])
    assert health.live() == {"loops": "ok"}
    health.workers.append(dead)
    assert health.live() == {"batch:queue": "died: RuntimeError"}
    health.stopping = True  # a process that is stopping ends its loops on purpose
    assert health.live() == {"loops": "ok"}
    alive.cancel()


def test_readiness_names_the_failing_check() -> None:
    health = Health(checks={"broker": lambda: None, "database": lambda: "did not answer"})
    assert health.ready() == {"broker": "ok", "database": "did not answer"}
    health.checks["database"] = lambda: None
    assert set(health.ready().values()) == {"ok"}


class FlakyPool:
    """A pool whose connections answer or not, as the test says."""

    def __init__(self) -> None:
        self.answers: list[bool] = []

    def acquire(self) -> Any:
        pool = self

        class Conn:
            async def __aenter__(self) -> Conn:
                return self

            async def __aexit__(self, *_: object) -> None:
                return None

            async def fetchval(self, _: str) -> int:
                if not pool.answers.pop(0):
                    raise ConnectionError("gone")
                return 1

        return Conn()


async def test_one_failed_probe_is_tolerated_two_are_an_outage(monkeypatch: Any) -> None:
    monkeypatch.setattr("libs.service.http.PROBE_INTERVAL", 0.01)
    pool, health, stop = FlakyPool(), Health(), asyncio.Event()
    seen: list[bool] = []
    pool.answers = [True, False, True, False, False, True]

    async def watch() -> None:
        while pool.answers:
            await asyncio.sleep(0.001)
        stop.set()

    probing = asyncio.create_task(health.probe_database(pool, stop))
    original = pool.acquire

    def recording() -> Any:
        seen.append(health.database_ok)
        return original()

    pool.acquire = recording  # type: ignore[method-assign]
    await asyncio.wait_for(watch(), 5)
    await probing
    # state before each probe: after T, F (tolerated), T, F (tolerated), F (outage), then T
    assert seen == [False, True, True, True, True, False]
    assert health.database_ok is True
