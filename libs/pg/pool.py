"""Connection pools and single connections, with the codecs every orderflow database uses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from libs.observability.metrics import METRICS, metrics_enabled

__all__ = ["Conn", "connect", "connection", "create_pool", "tables"]

# What handlers and stores accept: a plain connection or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """What a connection goes back to the pool with: an open transaction is rolled back (asyncpg
    does that before calling this), and nothing else is sent. The default would send
    ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, one more
    round trip per unit of work. So session state must not be left on a pooled connection:
    transaction-scoped locks (``pg_advisory_xact_lock``) and settings (``SET LOCAL``) only;
    LISTEN and session locks belong on a connection of their own (as the relay's listener)."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 8, name: str | None = None
) -> asyncpg.Pool[Any]:
    """A pool whose connections decode json/jsonb to Python objects and are not reset on
    release (see :func:`_keep_session`); with a ``name``, and metrics on, each statement its
    connections send counts as a round trip of that pool (``orderflow.db.client.operations``)."""
    counted = {"orderflow.pool": name} if name and metrics_enabled() else None

    async def init(conn: asyncpg.Connection[Any]) -> None:
        await _init_connection(conn)
        if counted is not None:
            conn.add_query_logger(lambda _query: METRICS.db_operations.add(1, counted))

    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init, reset=_keep_session
    )
    assert pool is not None
    return pool


async def connect(dsn: str, *, application_name: str = "orderflow") -> asyncpg.Connection[Any]:
    """One connection outside any pool (the relay's listener, admin work)."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        dsn, server_settings={"application_name": application_name}
    )
    await _init_connection(conn)
    return conn


@asynccontextmanager
async def connection(
    dsn: str, *, application_name: str = "orderflow"
) -> AsyncIterator[asyncpg.Connection[Any]]:
    """``connect`` as a context manager: the connection is closed however the block ends."""
    conn = await connect(dsn, application_name=application_name)
    try:
        yield conn
    finally:
        await conn.close()


async def tables(conn: Conn, queries: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each named query's rows, as dicts (for reports and checks, not the hot path)."""
    return {name: [dict(r) for r in await conn.fetch(query)] for name, query in queries.items()}
