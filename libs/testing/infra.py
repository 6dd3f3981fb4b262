"""Throw-away broker vhosts and databases, so tests never touch a running system or each other."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from libs.inbox import store as inbox_store
from libs.messaging.admin import delete_vhost, ensure_vhost, with_vhost
from libs.outbox import store as outbox_store
from libs.pg.admin import drop_database, ensure_database
from libs.pg.migrations import Migration, apply
from libs.pg.pool import connect

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def dsn_for(admin_dsn: str, database: str) -> str:
    return admin_dsn.rsplit("/", 1)[0] + "/" + database


@asynccontextmanager
async def temporary_vhost(
    base_url: str = DEFAULT_AMQP, *, prefix: str = "oftest"
) -> AsyncIterator[str]:
    """An AMQP URL on a new vhost, deleted (with everything in it) afterwards."""
    vhost = unique_name(prefix)
    await ensure_vhost(vhost)
    try:
        yield with_vhost(base_url, vhost)
    finally:
        await delete_vhost(vhost)


@asynccontextmanager
async def temporary_database(
    admin_dsn: str = DEFAULT_ADMIN_DSN,
    *,
    prefix: str = "oftest",
    migrations: list[Migration] | None = None,
) -> AsyncIterator[str]:
    """A DSN of a new database with outbox, inbox and ``migrations``; dropped afterwards."""
    name = unique_name(prefix)
    await ensure_database(admin_dsn, name)
    dsn = dsn_for(admin_dsn, name)
    try:
        conn = await connect(dsn)
        try:
            await apply(
                conn, [*outbox_store.migrations(), *inbox_store.migrations(), *(migrations or [])]
            )
        finally:
            await conn.close()
        yield dsn
    finally:
        await drop_database(admin_dsn, name)
