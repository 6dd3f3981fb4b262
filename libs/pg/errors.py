"""Translate asyncpg and socket errors into the toolkit's own classes.

Only errors that may disappear on retry are translated; anything else (a bug, a constraint the
handler did not expect) propagates unchanged and the consumer treats it as a failed attempt.
"""

from __future__ import annotations

import asyncio

import asyncpg

from libs.errors import ConcurrencyConflict, InfrastructureUnavailable, OrderflowError

_CONFLICT_STATES = frozenset({"40001", "40P01"})
# 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, 53300 too many
# connections, 08xxx connection exceptions.
_UNAVAILABLE_PREFIXES = ("08", "57P", "53300")


def translate(exc: BaseException) -> BaseException:
    """The orderflow error for a driver error, or the error itself."""
    if isinstance(exc, OrderflowError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        if state in _CONFLICT_STATES:
            return ConcurrencyConflict(f"{type(exc).__name__} ({state})")
        if state.startswith(_UNAVAILABLE_PREFIXES):
            return InfrastructureUnavailable(f"database: {type(exc).__name__} ({state})")
        return exc
    if isinstance(
        exc,
        asyncpg.InterfaceError
        | asyncpg.ConnectionDoesNotExistError
        | OSError
        | asyncio.TimeoutError,
    ):
        return InfrastructureUnavailable(f"database: {type(exc).__name__}: {exc}")
    return exc
