"""Canary secrets never appear in logs, spans, dead letters or error messages."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from libs.testing.otlp import OtlpReceiver
from orderflow.console import ConsoleSettings, create_app
from orderflow.console.access import add_user
from orderflow.dlq import Letter, list_letters

from .conftest import System, cli, running_system
from .test_console import csrf_of

pytestmark = pytest.mark.e2e
SERVICES = ("order_svc", "payment_svc", "inventory_svc", "saga")


async def test_canary_secrets_stay_out_of_every_log_span_dead_letter_and_error() -> None:
    canary = "CANARY" + uuid.uuid4().hex
    planted = {}
    for service in SERVICES:
        planted[f"amqp_{{users}}{service}"] = f"{canary}amqp{service}"
        planted[f"pg_orderflow_{service}"] = f"{canary}pg{service}"
    with OtlpReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "ORDERFLOW_LOG_LEVEL": "DEBUG",
        }
        async with running_system(extra_env=env, secret_values=planted) as system:
            outputs = []
            for args in (
                ("--customer", "alice", "--item", "WIDGET:1"),
                ("--customer", "bob", "--item", "GADGET:3"),
                ("--customer", "alice", "--item", "GIZMO:5"),
            ):
                code, out = await cli(system.env, "place-order", *args, "--wait")
                assert code == 0, out
                outputs.append(out)
            # a handler error and a poison message, so that error paths write logs and dead letters
            await system.scalar(
                "order_svc", "ALTER TABLE order_lines RENAME TO lines_away", admin=True
            )
            await system.place("alice", ("WIDGET", 1, "9.99"))
            connection = await aio_pika.connect_robust(system.env["ORDERFLOW_AMQP_URL"])
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("order.commands")
            await exchange.publish(
                aio_pika.Message(b"{broken", content_type="application/cloudevents+json"),
                routing_key="order.place_order.v1",
            )
            await connection.close()
            for _ in range(100):
                letters = await list_letters(system.settings)
                if len(letters) >= 2:
                    break
                await asyncio.sleep(0.2)
            await system.scalar(
                "order_svc", "ALTER TABLE lines_away RENAME TO order_lines", admin=True
            )
            # a wrong password for a service user: the error names the user, not the password
            user = system.settings.broker_user("payment_svc")
            bad_url = system.env["ORDERFLOW_AMQP_URL"].replace(
                "guest:guest", f"{user}:{canary}wrong"
            )
            code, out = await cli(
                {**system.env, "ORDERFLOW_AMQP_URL": bad_url},
                "place-order",
                "--customer",
                "alice",
                "--item",
                "WIDGET:1",
            )
            assert code == 1
            outputs.append(out)
            await asyncio.sleep(1.0)
            console_said = await console_responses(system, canary, letters)
            logs = system.log.getvalue()
        spans = receiver.snapshot()

    assert len(letters) >= 2
    assert any(letter.error_class == "MalformedMessage" for letter in letters)
    assert any("lines" in letter.error for letter in letters)
    assert "refused the login" in outputs[-1]
    assert logs.count("\n") > 50
    assert len(spans) > 20
    haystacks = {
        "service logs": logs,
        "CLI output": "\n".join(outputs),
        "spans": json.dumps([{"name": s.name, **s.attributes} for s in spans], default=str),
        "console pages, headers and log": console_said,
        "dead letters": "\n".join(
            f"{letter.headers}\n{letter.error}\n{letter.body!r}" for letter in letters
        ),
    }
    for where, text in haystacks.items():
        assert canary not in text, f"a secret leaked into the {where}"


async def console_responses(system: System, canary: str, letters: list[Letter]) -> str:
    """Every console page (logged in with a canary password, after a wrong one), an error page
    with a canary password in a DSN, and what the console logged meanwhile."""
    add_user(system.settings.secrets_dir, "canary", "operator", canary + "console")
    said: list[str] = []
    broken = system.settings.model_copy(
        update={"databases": {"order": f"postgresql://nobody:{canary}dsn@127.0.0.1:1/none"}}
    )
    with capture_logs() as logged:
        for settings in (system.settings, broken):
            async with TestClient(TestServer(create_app(settings, ConsoleSettings()))) as client:
                token = await csrf_of(client)
                for password in (canary + "wrong", canary + "console"):
                    response = await client.post(
                        "/login", data={"csrf": token, "user": "canary", "password": password}
                    )
                    said.append(await response.text())
                paths = ["/", "/live/overview", "/orders", "/sagas", "/letters"]
                paths += [f"/letters/{letter.id}" for letter in letters]
                paths += [f"/orders/{order_id}" for order_id in system.client.outcomes]
                for path in paths:
                    response = await client.get(path)
                    said += [str(dict(response.headers)), await response.text()]
                    if settings is broken and path == "/orders":
                        assert response.status == 503  # the error page was seen
    said += [json.dumps(event, default=str) for event in logged]
    return "\n".join(said)
