"""The whole system as the operator tools see it: services, their databases and migrations,
from the one description (:mod:`contracts.system`)."""

from __future__ import annotations

import importlib
from typing import Any

from contracts.system import SYSTEM
from libs.inbox import store as inbox_store
from libs.outbox import store as outbox_store
from libs.pg.migrations import Migration

SERVICES = SYSTEM.names

__all__ = ["SERVICES", "SYSTEM", "migrations", "own_migrations", "service_queries"]


def service_queries(service: str) -> Any:
    """What operators may read from a service's database: its package's ``queries`` module
    (``check_tables(conn, grace=…)`` at least)."""
    return importlib.import_module(f"{SYSTEM.service(service).name}.queries")


def own_migrations(service: str) -> list[Migration]:
    """A service's own tables: its package's ``bootstrap.migrations()``."""
    bootstrap = importlib.import_module(f"{SYSTEM.service(service).name}.bootstrap")
    own: list[Migration] = bootstrap.migrations()
    return own


def migrations(service: str) -> list[Migration]:
    """Everything one service's database needs: outbox, inbox, then its own tables."""
    return [*outbox_store.migrations(), *inbox_store.migrations(), *own_migrations(service)]
