"""Create and drop databases (needs a DSN of a role allowed to do so)."""

from __future__ import annotations

import asyncpg

from libs.pg.pool import connection


def database_of(dsn: str) -> str:
    """The database name a DSN points at."""
    tail = dsn.rsplit("/", 1)[-1]
    return tail.split("?", 1)[0]


def on_database(dsn: str, database: str) -> str:
    """The same server, role and options as ``dsn``, on ``database`` (an administrator's DSN
    pointed at a service's database, for migrations, vacuum, counts)."""
    base, _, query = dsn.partition("?")
    return base.rsplit("/", 1)[0] + "/" + database + (f"?{query}" if query else "")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(admin_dsn: str, name: str) -> bool:
    """Create the database if it is missing; True when it was created."""
    async with connection(admin_dsn) as conn:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop the database, disconnecting whoever is still on it."""
    async with connection(admin_dsn) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
