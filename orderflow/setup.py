"""`orderflow setup`: databases, migrations, broker vhost and topology, demo data. Idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.contracts import TOPOLOGY
from libs.messaging.admin import ensure_vhost, vhost_of
from libs.messaging.connection import connect as amqp_connect
from libs.messaging.topology import declare
from libs.pg.admin import database_of, ensure_database
from libs.pg.migrations import apply
from libs.pg.pool import connect
from libs.settings import Settings
from orderflow import demo_data
from orderflow.system import SERVICES, migrations


@dataclass
class SetupReport:
    created_databases: list[str] = field(default_factory=list)
    applied: dict[str, list[str]] = field(default_factory=dict)
    seeded: bool = False


async def setup(settings: Settings, *, reset: bool = False, seed: bool = True) -> SetupReport:
    report = SetupReport()
    for service in SERVICES:
        dsn = settings.dsn_for(service)
        if await ensure_database(settings.pg_admin_dsn, database_of(dsn)):
            report.created_databases.append(database_of(dsn))
        conn = await connect(dsn)
        try:
            done = await apply(conn, migrations(service))
            report.applied[service] = [f"{m.component}/{m.version:04d}_{m.name}" for m in done]
            if reset:
                await _reset(conn, service)
        finally:
            await conn.close()
    vhost = vhost_of(settings.amqp_url)
    if vhost != "/":
        await ensure_vhost(vhost)
    connection = await amqp_connect(settings.amqp_url, name="orderflow-setup")
    try:
        channel = await connection.channel()
        await declare(channel, TOPOLOGY)
        if reset:
            for spec in TOPOLOGY.queues:
                for name in (spec.name, spec.dead_letter_queue):
                    await (await channel.get_queue(name)).purge()
        await channel.close()
    finally:
        await connection.close()
    if seed:
        await seed_demo(settings)
        report.seeded = True
    return report


_TABLES = {
    "order_svc": "order_lines, orders",
    "payment_svc": "ledger, payments, customers",
    "inventory_svc": "reservation_lines, reservations, stock",
    "saga": "saga_log, saga_instance",
}


async def _reset(conn, service: str) -> None:  # type: ignore[no-untyped-def]
    await conn.execute(f"TRUNCATE outbox, inbox, {_TABLES[service]}")


async def seed_demo(settings: Settings) -> None:
    """Demo customers and stock; existing rows are left as they are."""
    conn = await connect(settings.dsn_for("payment_svc"))
    try:
        await conn.executemany(
            """INSERT INTO customers (id, name, balance, opening_balance) VALUES ($1, $2, $3, $3)
               ON CONFLICT (id) DO NOTHING""",
            demo_data.CUSTOMERS,
        )
    finally:
        await conn.close()
    conn = await connect(settings.dsn_for("inventory_svc"))
    try:
        await conn.executemany(
            """INSERT INTO stock (sku, name, on_hand, opening_on_hand) VALUES ($1, $2, $3, $3)
               ON CONFLICT (sku) DO NOTHING""",
            [(sku, name, qty) for sku, name, _, qty in demo_data.CATALOG],
        )
    finally:
        await conn.close()
