"""`orderflow setup`: databases, migrations, broker vhost and topology, demo data. Idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts import TOPOLOGY
from contracts.permissions import broker_permissions
from inventory_svc import queries as inventory_queries
from libs.messaging.admin import Grant, ensure_access, vhost_of
from libs.messaging.connection import connect as amqp_connect
from libs.messaging.topology import declare
from libs.pg import roles
from libs.pg.admin import database_of, ensure_database, on_database, quote_ident
from libs.pg.migrations import apply
from libs.pg.pool import connection
from libs.secrets import ensure_secret_file, user_of
from libs.settings import Settings
from order_svc import catalog
from orderflow import demo_data
from orderflow.system import SERVICES, SYSTEM, migrations
from payment_svc import queries as payment_queries


@dataclass
class SetupReport:
    created_databases: list[str] = field(default_factory=list)
    applied: dict[str, list[str]] = field(default_factory=dict)
    seeded: bool = False


async def setup(settings: Settings, *, reset: bool = False, seed: bool = True) -> SetupReport:
    report = SetupReport()
    admin_user = user_of(settings.pg_admin_dsn)
    for service in SERVICES:
        dsn = settings.dsn_for(service)
        database, runtime = database_of(dsn), user_of(dsn)
        if await ensure_database(settings.pg_admin_dsn, database):
            report.created_databases.append(database)
        least_privilege = runtime is not None and runtime != admin_user
        if least_privilege:
            assert runtime is not None
            # one password per role, never one for all: ORDERFLOW_PG_PASSWORD is a process's own
            password = ensure_secret_file(settings.secrets_dir_of(service), f"pg_{runtime}")
            async with connection(settings.pg_admin_dsn) as admin:
                await roles.ensure_roles(admin, runtime=runtime, password=password)
                await roles.lock_down_database(admin, database=database, runtime=runtime)
        async with connection(on_database(settings.pg_admin_dsn, database)) as conn:
            if least_privilege:
                assert runtime is not None
                await roles.prepare_schema(conn, runtime=runtime)
                await conn.execute(f"SET ROLE {quote_ident(roles.owner_of(runtime))}")
            done = await apply(conn, migrations(service))
            report.applied[service] = [f"{m.component}/{m.version:04d}_{m.name}" for m in done]
            if least_privilege:
                assert runtime is not None
                await conn.execute("RESET ROLE")
                await roles.grant_runtime(conn, runtime=runtime)
            if reset:
                await _reset(conn, service)
    await _broker(settings, reset=reset)
    if seed:
        await seed_demo(settings)
        report.seeded = True
    return report


async def _broker(settings: Settings, *, reset: bool) -> None:
    vhost = vhost_of(settings.amqp_url)
    grants = []
    if settings.amqp_service_users:
        for service in SERVICES:
            user = settings.broker_user(service)
            # one password per user, never one for all: ORDERFLOW_AMQP_PASSWORD is a process's own
            password = ensure_secret_file(settings.secrets_dir_of(service), f"amqp_{user}")
            perms = broker_permissions(service)
            grants.append(Grant(user, password, perms.configure, perms.write, perms.read))
    if vhost != "/" or grants:  # the vhost, the operator's rights on it, the service users
        await ensure_access(
            vhost,
            grants,
            operator="guest" if vhost != "/" else None,
            create_vhost=vhost != "/",
            api=settings.management_api(),
        )
    connection = await amqp_connect(
        settings.amqp_url, name="orderflow-setup", ssl_context=settings.amqp_ssl_context()
    )
    try:
        channel = await connection.channel()
        await declare(channel, TOPOLOGY, replicas=settings.quorum_replicas())
        if reset:
            for spec in TOPOLOGY.queues:
                for name in (spec.name, spec.dead_letter_queue):
                    await (await channel.get_queue(name)).purge()
        await channel.close()
    finally:
        await connection.close()


async def _reset(conn, service: str) -> None:  # type: ignore[no-untyped-def]
    tables = ", ".join(("outbox", "inbox", *SYSTEM.service(service).tables))
    await conn.execute(f"TRUNCATE {tables}")


async def seed_demo(settings: Settings) -> None:
    """Demo catalog prices, customers and stock; existing rows (an operator's price) are left as
    they are."""
    async with connection(
        on_database(settings.pg_admin_dsn, database_of(settings.dsn_for("order_svc")))
    ) as conn:
        await catalog.seed(conn, [(sku, name, price) for sku, name, price, _ in demo_data.CATALOG])
    async with connection(
        on_database(settings.pg_admin_dsn, database_of(settings.dsn_for("payment_svc")))
    ) as conn:
        await payment_queries.seed_customers(conn, demo_data.CUSTOMERS)
    async with connection(
        on_database(settings.pg_admin_dsn, database_of(settings.dsn_for("inventory_svc")))
    ) as conn:
        await inventory_queries.seed_stock(
            conn, [(sku, name, qty) for sku, name, _, qty in demo_data.CATALOG]
        )
