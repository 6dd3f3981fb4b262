"""Throw-away broker vhosts and databases, so tests never touch a running system or each other."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from libs.inbox import store as inbox_store
from libs.messaging.admin import (
    LOCAL_API,
    ManagementApi,
    ensure_vhost,
    remove_access,
    with_vhost,
)
from libs.outbox import store as outbox_store
from libs.pg.admin import database_of, drop_database, ensure_database, on_database
from libs.pg.migrations import Migration, apply
from libs.pg.pool import connection
from libs.secrets import with_credentials
from libs.system import SystemSpec

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def dsn_for(admin_dsn: str, database: str, *, user: str | None = None) -> str:
    """A DSN of ``database`` on the admin DSN's server, as ``user`` (default: the admin's)."""
    dsn = on_database(admin_dsn, database)
    return with_credentials(dsn, user=user) if user else dsn


def service_env(
    admin_dsn: str, amqp_url: str, *, prefix: str, secrets_dir: str, system: SystemSpec
) -> dict[str, str]:
    """ORDERFLOW_* variables for a whole system in fresh databases (names start with ``prefix``):
    services connect as their own least-privilege roles, with secrets in ``secrets_dir``, and as
    broker users of their own (``<prefix>_<random>_<service>``), so that a running
    installation's users are never touched; :func:`remove_service_users` deletes them."""
    env = {
        "ORDERFLOW_AMQP_URL": amqp_url,
        "ORDERFLOW_PG_ADMIN_DSN": admin_dsn,
        "ORDERFLOW_SECRETS_DIR": secrets_dir,
        "ORDERFLOW_AMQP_USER_PREFIX": unique_name(prefix) + "_",
    }
    for spec in system.services:
        env[spec.dsn_env] = dsn_for(
            admin_dsn, unique_name(f"{prefix}_{spec.database_key}"), user=f"orderflow_{spec.name}"
        )
    return env


@asynccontextmanager
async def temporary_vhost(
    base_url: str = DEFAULT_AMQP, *, prefix: str = "oftest", api: ManagementApi = LOCAL_API
) -> AsyncIterator[str]:
    """An AMQP URL on a new vhost, deleted (with everything in it) afterwards."""
    vhost = unique_name(prefix)
    await ensure_vhost(vhost, is_new=True, api=api)  # a fresh unique name
    try:
        yield with_vhost(base_url, vhost)
    finally:
        await remove_access([], vhost, api=api)


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
        async with connection(dsn) as conn:
            await apply(
                conn, [*outbox_store.migrations(), *inbox_store.migrations(), *(migrations or [])]
            )
        yield dsn
    finally:
        await drop_database(admin_dsn, name)


async def remove_service_users(
    env: dict[str, str], system: SystemSpec, *, api: ManagementApi = LOCAL_API
) -> None:
    """Delete the broker users :func:`service_env` named."""
    prefix = env["ORDERFLOW_AMQP_USER_PREFIX"]
    await remove_access([prefix + name for name in system.names], api=api)


@asynccontextmanager
async def isolated_system(
    system: SystemSpec,
    *,
    admin_dsn: str,
    amqp_base: str,
    prefix: str,
    api: ManagementApi = LOCAL_API,
) -> AsyncIterator[dict[str, str]]:
    """ORDERFLOW_* variables naming a vhost, a database per service (all empty), broker users
    and a secrets directory of their own (names start with ``prefix``); everything removed
    afterwards, the databases side by side."""
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(temporary_vhost(amqp_base, prefix=prefix, api=api))
        secrets = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{prefix}-secrets-"))
        env = service_env(admin_dsn, url, prefix=prefix, secrets_dir=secrets, system=system)
        if api.node:
            env["ORDERFLOW_RABBITMQ_NODE"] = api.node
        stack.push_async_callback(remove_service_users, env, system, api=api)
        databases = [database_of(env[spec.dsn_env]) for spec in system.services]
        stack.push_async_callback(_drop_databases, admin_dsn, databases)
        yield env


async def _drop_databases(admin_dsn: str, databases: list[str]) -> None:
    await asyncio.gather(*(drop_database(admin_dsn, name) for name in databases))
