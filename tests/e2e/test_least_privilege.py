"""Each service process holds its own credentials and nothing else, and they open only its doors.

The services are started by the supervisor as ``orderflow up`` starts them; the test reads each
process's real environment from ``/proc`` and uses exactly what it finds there.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import aiormq
import asyncpg
import pytest

from libs.pg.admin import database_of
from libs.secrets import user_of
from orderflow.confine import settings_from
from tests.e2e.conftest import running_system

pytestmark = pytest.mark.timeout(300)


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_every_service_process_gets_only_its_own_credentials() -> None:
    async with running_system() as system:
        operator_password = urlsplit(system.settings.amqp_url).password
        for child in system.supervisor.children:
            assert child.process is not None
            env = environment_of(child.process.pid)
            service = child.service
            assert "ORDERFLOW_PG_ADMIN_DSN" not in env, service
            assert not [k for k in env if "PASSWORD" in k or "RABBITMQ_ADMIN" in k], service
            assert user_of(env["ORDERFLOW_AMQP_URL"]) == system.settings.broker_user(service)
            assert f":{operator_password}@" not in env["ORDERFLOW_AMQP_URL"]
            own_dsns = [k for k in env if k.endswith("_DSN")]
            assert len(own_dsns) == 1, (service, own_dsns)
            assert urlsplit(env[own_dsns[0]]).password is None  # it is in the secrets file
            assert urlsplit(env["ORDERFLOW_AMQP_URL"]).password is None
            secrets = sorted(os.listdir(env["ORDERFLOW_SECRETS_DIR"]))
            role = user_of(system.settings.dsn_for(service))
            assert secrets == sorted(
                [f"amqp_{system.settings.broker_user(service)}", f"pg_{role}"]
            ), service
            assert os.stat(env["ORDERFLOW_SECRETS_DIR"]).st_mode & 0o077 == 0


async def test_a_service_with_its_own_credentials_cannot_reach_another_services_data() -> None:
    async with running_system() as system:
        payment = next(c for c in system.supervisor.children if c.service == "payment_svc")
        assert payment.process is not None
        settings = settings_from(environment_of(payment.process.pid))
        own_dsn = settings.dsn_for("payment_svc")
        conn = await asyncpg.connect(own_dsn)  # its own database: fine
        await conn.close()
        order_db = database_of(system.settings.dsn_for("order_svc"))
        foreign = own_dsn.rsplit("/", 1)[0] + "/" + order_db
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(foreign)

        amqp_url = settings.amqp_url_for("payment_svc")
        connection = await aio_pika.connect_robust(amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange("payment.events", ensure=False)
            await events.publish(  # its own events: fine
                aio_pika.Message(b"{}", user_id=user_of(amqp_url)), routing_key="nobody.listens"
            )
            channel = await connection.channel(publisher_confirms=True)
            others = await channel.get_exchange("order.events", ensure=False)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await others.publish(
                    aio_pika.Message(b"{}", user_id=user_of(amqp_url)),
                    routing_key="order.order_confirmed.v1",
                )
            channel = await connection.channel(publisher_confirms=True)
            inventory_dlx = await channel.get_exchange(
                "orderflow.dead-letter.inventory_svc.commands", ensure=False
            )
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await inventory_dlx.publish(
                    aio_pika.Message(b"{}", user_id=user_of(amqp_url)),
                    routing_key="inventory_svc.commands",
                )
        finally:
            await connection.close()
