"""Least privilege and transport security, against the real broker and database.

What `orderflow setup` provisions is tested as each service would use it: the payment service's
broker user and database role, and what they are refused.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import pytest
import pytest_asyncio

from libs.messaging.connection import connect as amqp_connect
from libs.pg.admin import database_of
from libs.secrets import with_credentials
from libs.settings import Settings
from libs.testing.tls import make_pki
from orderflow.chaos.proxy import TcpProxy
from orderflow.setup import setup

from .conftest import isolated_env

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provisioned() -> AsyncIterator[Settings]:
    async with isolated_env() as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            settings = Settings()
            await setup(settings)
            yield settings
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


async def payment_channel(
    settings: Settings,
) -> tuple[aio_pika.abc.AbstractRobustConnection, aio_pika.abc.AbstractChannel]:
    connection = await amqp_connect(settings.amqp_url_for("payment_svc"), name="test-payment")
    return connection, await connection.channel(publisher_confirms=True)


def message(user_id: str | None = None) -> aio_pika.Message:
    return aio_pika.Message(b"{}", content_type="application/cloudevents+json", user_id=user_id)


async def test_payment_svc_can_do_its_own_work(provisioned: Settings) -> None:
    connection, channel = await payment_channel(provisioned)
    events = await channel.get_exchange("payment.events", ensure=False)
    await events.publish(
        message(provisioned.broker_user("payment_svc")), routing_key="payment.payment_captured.v1"
    )
    queue = await channel.get_queue("payment_svc.commands", ensure=False)
    assert await queue.get(fail=False) is None  # allowed to read its own (empty) queue
    await connection.close()


async def test_payment_svc_may_not_publish_to_inventory_commands(provisioned: Settings) -> None:
    connection, channel = await payment_channel(provisioned)
    exchange = await channel.get_exchange("inventory.commands", ensure=False)
    with pytest.raises(
        aiormq.exceptions.ChannelAccessRefused, match=r"access to exchange 'inventory\.commands'"
    ):
        await exchange.publish(
            message(provisioned.broker_user("payment_svc")),
            routing_key="inventory.reserve_inventory.v1",
        )
    await connection.close()


async def test_payment_svc_may_not_read_order_svcs_queue(provisioned: Settings) -> None:
    connection, channel = await payment_channel(provisioned)
    queue = await channel.get_queue("order_svc.commands", ensure=False)
    with pytest.raises(
        aiormq.exceptions.ChannelAccessRefused, match=r"access to queue 'order_svc\.commands'"
    ):
        await queue.get(fail=False)
    await connection.close()


async def test_payment_svc_may_not_declare_queues_outside_its_own(provisioned: Settings) -> None:
    connection, channel = await payment_channel(provisioned)
    with pytest.raises(
        aiormq.exceptions.ChannelAccessRefused, match=r"access to queue 'payment_svc\.sneaky'"
    ):
        await channel.declare_queue("payment_svc.sneaky", durable=True)
    await connection.close()


async def test_a_message_with_a_forged_sender_is_refused_by_the_broker(
    provisioned: Settings,
) -> None:
    connection, channel = await payment_channel(provisioned)
    events = await channel.get_exchange("payment.events", ensure=False)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
        await events.publish(
            message(provisioned.broker_user("order_svc")), routing_key="payment.payment_captured.v1"
        )
    await connection.close()


async def test_payment_svc_role_cannot_reach_the_order_database_nor_alter_its_own_schema(
    provisioned: Settings,
) -> None:
    own = await asyncpg.connect(provisioned.dsn_for("payment_svc"))
    assert await own.fetchval("SELECT count(*) FROM customers") == 3
    await own.execute("UPDATE customers SET name = name WHERE id = 'alice'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="owner"):
        await own.execute("ALTER TABLE payments ADD COLUMN sneaky int")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await own.execute("CREATE TABLE sneaky (x int)")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await own.execute("DROP TABLE ledger")
    await own.close()
    order_db = database_of(provisioned.dsn_for("order_svc"))
    as_payment_on_orders = provisioned.dsn_for("payment_svc").rsplit("/", 1)[0] + "/" + order_db
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await asyncpg.connect(as_payment_on_orders)


# -- TLS ---------------------------------------------------------------------------------------


async def test_amqp_over_tls_with_a_client_certificate_and_nothing_less(
    provisioned: Settings, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    proxy = await TcpProxy(target_host="127.0.0.1", target_port=5672, server_ssl=server).start()
    try:
        url = (
            provisioned.amqp_url_for("payment_svc")
            .replace("amqp://", "amqps://")
            .replace(":5672/", f":{proxy.port}/")
        )
        settings = Settings(
            amqp_url=url,
            amqp_ca_file=pki.ca_cert,
            amqp_cert_file=pki.client_cert,
            amqp_key_file=pki.client_key,
        )
        connection = await amqp_connect(
            url, name="tls-test", ssl_context=settings.amqp_ssl_context()
        )
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange("payment.events", ensure=False)
        await events.publish(
            message(provisioned.broker_user("payment_svc")),
            routing_key="payment.payment_refunded.v1",
        )
        assert connection.transport is not None
        await connection.close()
        no_cert = Settings(amqp_url=url, amqp_ca_file=pki.ca_cert)
        with pytest.raises(Exception):  # noqa: B017,PT011 - the TLS handshake is refused
            await amqp_connect(
                url, name="tls-test", ssl_context=no_cert.amqp_ssl_context(), timeout=3
            )
        wrong_ca = Settings(amqp_url=url)  # the system's CAs do not know ours
        with pytest.raises(Exception):  # noqa: B017,PT011
            await amqp_connect(
                url, name="tls-test", ssl_context=wrong_ca.amqp_ssl_context(), timeout=3
            )
    finally:
        await proxy.close()


PG_TLS_DIR = Path("/var/lib/postgresql/orderflow-test-tls")


def _postgres_owned(path: Path) -> None:
    subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


async def test_postgresql_over_tls_verifying_the_server_certificate(provisioned: Settings) -> None:
    # A TLS listener of the test's own: certificates the test makes, reloaded into the server and
    # taken out again afterwards. They stay in a fixed place so a restart never misses them.
    pki = make_pki(PG_TLS_DIR)
    _postgres_owned(PG_TLS_DIR)
    admin = await asyncpg.connect(provisioned.pg_admin_dsn)
    try:
        await admin.execute(f"ALTER SYSTEM SET ssl_cert_file = '{pki.server_cert}'")
        await admin.execute(f"ALTER SYSTEM SET ssl_key_file = '{pki.server_key}'")
        await admin.execute("ALTER SYSTEM SET ssl = on")
        await admin.execute("SELECT pg_reload_conf()")
        dsn = provisioned.dsn_for("payment_svc") + f"?sslmode=verify-full&sslrootcert={pki.ca_cert}"
        deadline = time.monotonic() + 10  # the postmaster reloads its configuration when it can
        while True:
            try:
                conn = await asyncpg.connect(dsn)
                break
            except (OSError, asyncpg.PostgresError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert (
            await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        )
        assert await conn.fetchval("SELECT count(*) FROM customers") == 3
        await conn.close()
        with tempfile.TemporaryDirectory() as other:
            stranger = make_pki(Path(other))
            bad = (
                provisioned.dsn_for("payment_svc")
                + f"?sslmode=verify-full&sslrootcert={stranger.ca_cert}"
            )
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncpg.connect(bad)
    finally:
        for setting in ("ssl", "ssl_cert_file", "ssl_key_file"):
            await admin.execute(f"ALTER SYSTEM RESET {setting}")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def test_credentials_are_replaced_in_urls_without_leaking_into_the_rest() -> None:
    url = with_credentials(
        "amqp://guest:guest@127.0.0.1:5672/orderflow", user="u", password="p@ss/w:rd"
    )
    assert url == "amqp://u:p%40ss%2Fw%3Ard@127.0.0.1:5672/orderflow"
