"""Small helpers shared by the benchmarks: percentiles, machine description."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def machine() -> dict[str, object]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "unknown"

    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": version(["psql", "--version"]),
        "rabbitmq": version(["rabbitmqctl", "-q", "version"]),
    }


async def writers_rate(
    pool: Any, *, writers: int, seconds: float, write: Callable[[Any, int], Awaitable[None]]
) -> float:
    """Transactions/s of ``writers`` concurrent loops, each calling ``write(conn, n)`` on a
    pooled connection of its own for ``seconds``."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.perf_counter() < stop_at:
                await write(conn, done)
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(writers)))
    return done / (time.perf_counter() - started)
