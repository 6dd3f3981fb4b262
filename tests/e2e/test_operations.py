"""Operating it: /livez, /readyz and /metrics of every process, counters that match what
happened, a real Prometheus evaluating the shipped alert rules, and /readyz following the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
import yaml

from contracts import REGISTRY
from contracts.order import PlaceOrder
from contracts.types import QuotedLine
from libs.messages import codec
from libs.settings import Settings
from orderflow.chaos.infrastructure import _via
from orderflow.chaos.proxy import TcpProxy
from orderflow.client import OrderClient
from orderflow.setup import setup
from orderflow.supervisor import Supervisor, http_get

from .conftest import ROOT, System, isolated_env, running_system

pytestmark = pytest.mark.e2e
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


def free_ports(count: int) -> int:
    """A base port with ``count`` free ports after it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65000:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1]))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match[2])
    return total


async def metrics_of(system: System, service: str) -> str:
    child = system.supervisor.of(service)[0]
    status, body = await http_get(f"http://127.0.0.1:{child.http_port}/metrics")
    assert status == 200, body
    return body


async def place_raw(url: str, body: bytes, message_id: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("order.commands", ensure=False)
        message = aio_pika.Message(
            body, content_type=codec.CONTENT_TYPE, message_id=message_id, type=PlaceOrder.TYPE
        )
        await exchange.publish(message, routing_key=PlaceOrder.TYPE)


def one_order(order_id: str) -> tuple[bytes, str]:
    """A PlaceOrder of one WIDGET for alice, as a body and its event id (to send twice)."""
    command = PlaceOrder(
        order_id=order_id,
        customer_id="alice",
        items=(QuotedLine(sku="WIDGET", quantity=1, unit_price=Decimal("9.99")),),
    )
    envelope = REGISTRY.envelope(command, source="/test", subject=order_id)
    return codec.encode(envelope), envelope.id


async def until(condition: Any, timeout: float, what: str) -> float:
    """Seconds until ``await condition()`` is true; fails after ``timeout``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def test_every_process_is_live_ready_and_counts_what_happened() -> None:
    async with running_system() as system:
        for child in system.supervisor.children:
            assert child.http_port is not None
            live = await http_get(f"http://127.0.0.1:{child.http_port}/livez")
            ready = await http_get(f"http://127.0.0.1:{child.http_port}/readyz")
            assert live == (200, json.dumps({"loops": "ok"})), (child.name, live)
            assert ready[0] == 200, (child.name, ready)
            assert set(json.loads(ready[1]).values()) == {"ok"}

        orders = [await system.place("alice", ("WIDGET", 1, "9.99")) for _ in range(3)]
        # one more order, sent twice with the same event id: one effect, one duplicate absorbed
        order_id = str(uuid.uuid4())
        body, event_id = one_order(order_id)
        url = system.env["ORDERFLOW_AMQP_URL"]
        await place_raw(url, body, event_id)
        await place_raw(url, body, event_id)
        # and a malformed one: dead-lettered by its class
        await place_raw(url, b"{not json", str(uuid.uuid4()))
        await system.wait(orders)
        await system.quiet_check()

        queue = "order_svc.commands"

        async def counted() -> bool:
            text = await metrics_of(system, "order_svc")
            outcome = "orderflow_outcome"
            return (
                samples(text, "messaging_client_consumed_messages_total", **{outcome: "duplicate"})
                == 1
                and samples(
                    text,
                    "messaging_client_consumed_messages_total",
                    **{outcome: "dead_lettered", "error_type": "MalformedMessage"},
                )
                == 1
            )

        await until(counted, 20, "order_svc counted the duplicate and the dead letter")
        text = await metrics_of(system, "order_svc")
        placed = samples(
            text,
            "messaging_client_consumed_messages_total",
            messaging_destination_name=queue,
            orderflow_message_type=PlaceOrder.TYPE,
            orderflow_outcome="processed",
        )
        assert placed == 4  # three orders and the one sent twice
        assert samples(text, "orderflow_db_client_operations_total") > 0
        assert samples(text, "orderflow_relay_leader") == 1

        saga = await metrics_of(system, "saga")
        assert samples(saga, "orderflow_saga_started_total") == 4
        assert samples(saga, "orderflow_saga_ended_total", orderflow_outcome="completed") == 4
        assert samples(saga, "orderflow_saga_duration_seconds_count") == 4
        # no label carries an order id or a message id
        for exposed in (text, saga):
            assert order_id not in exposed
            assert event_id not in exposed


@asynccontextmanager
async def prometheus(system: System, tmp: Path) -> AsyncIterator[str]:
    """A real Prometheus scraping every process each second and evaluating the shipped rules."""
    port = free_ports(1)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "orderflow",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{system.supervisor.port_of(c)}"],
                        "labels": {"service": c.service},
                    }
                    for c in system.supervisor.children
                ],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = await asyncio.create_subprocess_exec(
        "prometheus",
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: _ok(http_get(f"{base}/-/ready")), 30, "Prometheus did not become ready")
        yield base
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _ok(request: Any) -> bool:
    status, _ = await request
    return bool(status == 200)


async def query(base: str, expr: str) -> float | None:
    from urllib.parse import quote

    status, body = await http_get(f"{base}/api/v1/query?query={quote(expr)}")
    assert status == 200, body
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def firing(base: str, alert: str) -> bool:
    status, body = await http_get(f"{base}/api/v1/alerts")
    assert status == 200, body
    alerts = json.loads(body)["data"]["alerts"]
    return any(a["labels"]["alertname"] == alert and a["state"] == "firing" for a in alerts)


async def test_prometheus_sees_the_counts_and_the_stuck_saga_alert_fires_and_clears() -> None:
    base_port = free_ports(8)
    extra = {
        "ORDERFLOW_HTTP_PORT_BASE": str(base_port),
        "ORDERFLOW_METRICS_INTERVAL": "1",
        # a participant that does not answer keeps its sagas re-sending (stuck) for a minute
        "ORDERFLOW_SAGA__STEP_DEADLINE": "3",
        "ORDERFLOW_SAGA__RETRIES": "20",
    }
    with tempfile.TemporaryDirectory(prefix="ofprom-") as tmp:
        async with running_system(extra_env=extra) as system, prometheus(system, Path(tmp)) as prom:
            orders = [await system.place("alice", ("WIDGET", 1, "9.99")) for _ in range(2)]
            # two copies of one more order (one duplicate) and two malformed messages
            body, event_id = one_order(str(uuid.uuid4()))
            url = system.env["ORDERFLOW_AMQP_URL"]
            for _ in range(2):
                await place_raw(url, body, event_id)
                await place_raw(url, b"[1, 2", str(uuid.uuid4()))
            await system.wait(orders)
            consumed = "messaging_client_consumed_messages_total"

            async def agrees() -> bool:
                ended = await query(
                    prom, 'sum(orderflow_saga_ended_total{orderflow_outcome="completed"})'
                )
                duplicates = await query(prom, f'sum({consumed}{{orderflow_outcome="duplicate"}})')
                dead = await query(
                    prom,
                    f'sum({consumed}{{orderflow_outcome="dead_lettered", '
                    'error_type="MalformedMessage"})',
                )
                return (ended, duplicates, dead) == (3, 1, 2)

            await until(agrees, 30, "Prometheus counted 3 sagas, 1 duplicate, 2 dead letters")
            await until(
                lambda: firing(prom, "OrderflowDeadLetters"), 10, "the dead-letter alert fired"
            )
            assert not await firing(prom, "OrderflowSagasStuck")

            payment = system.supervisor.of("payment_svc")[0]
            await system.supervisor.kill(payment, 15)  # SIGTERM: stopped, not crashed
            assert not payment.alive
            stuck_order = await system.place("alice", ("WIDGET", 1, "9.99"))
            took = await until(
                lambda: firing(prom, "OrderflowSagasStuck"), 60, "the stuck-saga alert fired"
            )  # a 3 s deadline, the rule's 15 s "for", scrapes and evaluations: ~22 s when quick
            assert took <= 60

            await system.supervisor.start(payment)
            await system.supervisor.wait_ready(children=[payment])

            async def cleared() -> bool:
                return not await firing(prom, "OrderflowSagasStuck")

            await until(cleared, 60, "the stuck-saga alert cleared")
            await system.wait([stuck_order], timeout=60)


async def test_readyz_turns_503_when_the_broker_is_cut_and_200_when_it_is_back() -> None:
    async with AsyncExitStack() as stack:
        env = await stack.enter_async_context(isolated_env())
        settings = Settings.of(env)
        await setup(settings)
        target = urlsplit(env["ORDERFLOW_AMQP_URL"])
        proxy = await TcpProxy(target_host="127.0.0.1", target_port=target.port or 5672).start()
        port = proxy.port
        supervisor = Supervisor(
            env={**os.environ, **env},
            services=("order_svc",),
            restart=False,
            output=open("/dev/null", "w"),  # noqa: SIM115, ASYNC230 - closed with the process
            color=False,
            extra_env=lambda _child: {"ORDERFLOW_AMQP_URL": _via(env["ORDERFLOW_AMQP_URL"], port)},
        )
        stack.push_async_callback(supervisor.stop_all)
        await supervisor.start_all(timeout=60)
        child = supervisor.children[0]
        readyz = f"http://127.0.0.1:{child.http_port}/readyz"
        assert (await http_get(readyz))[0] == 200

        # cut: every connection reset, no new one accepted
        await proxy.close()
        assert proxy.reset_all() >= 0
        took = await until(lambda: _is(readyz, 503), 5, "/readyz went 503")
        status, body = await http_get(readyz)
        assert status == 503 and "broker" in json.loads(body), body
        assert took <= 5
        live = await http_get(f"http://127.0.0.1:{child.http_port}/livez")
        assert live[0] == 200  # not ready, but alive: no restart wanted

        proxy = await TcpProxy(
            target_host="127.0.0.1", target_port=target.port or 5672, listen_port=port
        ).start()
        stack.push_async_callback(proxy.close)
        await until(lambda: _is(readyz, 200), 30, "/readyz came back to 200")

        # and it works again: an order placed on the broker is taken and handled
        client = await OrderClient.open(env["ORDERFLOW_AMQP_URL"])
        stack.push_async_callback(client.close)
        await client.place(customer_id="alice", items=[("WIDGET", 1, Decimal("9.99"))])
        metrics = f"http://127.0.0.1:{child.http_port}/metrics"

        async def handled() -> bool:
            status, text = await http_get(metrics)
            return (
                status == 200
                and samples(
                    text, "messaging_client_consumed_messages_total", orderflow_outcome="processed"
                )
                >= 1
            )

        await until(handled, 30, "order_svc handled an order after the cut")


async def _is(url: str, status: int) -> bool:
    return (await http_get(url))[0] == status
