"""Versioned SQL migrations, applied once each, in order, under an advisory lock.

A migration is a file ``NNNN_description.sql`` in a package's ``migrations`` folder. Migrations
belong to a *component* (``outbox``, ``inbox``, ``payment`` …) so several packages can share one
database without their version numbers colliding. Each file runs in its own transaction together
with the row that records it, so a failed migration leaves nothing half-applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from libs.errors import ConfigurationError

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6F72_6466_6D69  # "ordfmi": serialises concurrent `setup` runs


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str


def load(package: str, component: str) -> list[Migration]:
    """The migrations shipped in ``<package>/migrations``, in version order."""
    folder = resources.files(package).joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        found.append(Migration(component, int(match["version"]), match["name"], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"{package}: two migrations share a version: {versions}")
    return found


async def apply(conn: asyncpg.Connection[Any], migrations: list[Migration]) -> list[Migration]:
    """Apply what is not applied yet; returns what was applied now."""
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               component text NOT NULL,
               version integer NOT NULL,
               name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (component, version))"""
    )
    applied_now: list[Migration] = []
    for migration in migrations:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            done = await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE component = $1 AND version = $2",
                migration.component,
                migration.version,
            )
            if done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                migration.component,
                migration.version,
                migration.name,
            )
            applied_now.append(migration)
    return applied_now
