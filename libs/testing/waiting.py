"""Waiting in tests for something another process does, without a fixed sleep: a fixed sleep is
either too short on a slow day or wasted on a quick one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["wait_until"]


async def wait_until(predicate: Any, *, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Return once ``predicate()`` (a value or an awaitable) is true; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
