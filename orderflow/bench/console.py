"""`orderflow bench console`: every console page's response time over real HTTP with a large
history in the databases (finished sagas with their logs, orders, payments, reservations) and
dead letters in a dead-letter queue; p50/p95/max per page against the 300 ms target."""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web

from libs.messaging.connection import connect as amqp_connect
from libs.messaging.consumer import (
    ERROR_ATTEMPTS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_SERVICE,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
)
from libs.pg import connection
from libs.pg.admin import database_of
from libs.settings import Settings
from libs.testing.infra import dsn_for
from orderflow.console import ConsoleSettings, create_app
from orderflow.setup import setup

__all__ = ["TARGET_P95_MS", "console_bench"]

TARGET_P95_MS = 300.0
ERRORS = ("UndefinedTableError", "ValidationError", "MalformedMessage")

# One finished order per row of generate_series, its saga with the eight log rows a completed
# saga writes, its payment, ledger entry and reservation; created over the last `span` hours.
SEED_ORDERS = """
INSERT INTO orders (id, customer_id, status, total, currency, placed_by, created_at, updated_at)
SELECT md5('o' || i)::uuid, 'cust-' || (i % 500), 'CONFIRMED', 9.99, 'USD', md5('p' || i)::uuid,
       now() - make_interval(secs => ($1::float8 * 3600) * (1 - i::float8 / $2)),
       now() - make_interval(secs => ($1::float8 * 3600) * (1 - i::float8 / $2))
  FROM generate_series(1, $2) AS i;
"""
SEED_LINES = """
INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price)
SELECT md5('o' || i)::uuid, 1, 'WIDGET', 1, 9.99 FROM generate_series(1, $1) AS i;
"""
SEED_SAGAS = """
INSERT INTO saga_instance (saga, id, status, step, attempt, state, version, created_at, updated_at)
SELECT 'order', md5('o' || i)::uuid::text, 'COMPLETED', NULL, 0,
       jsonb_build_object(
         'id', md5('o' || i)::uuid::text, 'status', 'COMPLETED',
         'data', jsonb_build_object('order_id', md5('o' || i)::uuid::text,
                                    'customer_id', 'cust-' || (i % 500),
                                    'items', jsonb_build_array(jsonb_build_object('sku', 'WIDGET',
                                                                                 'quantity', 1)),
                                    'total', '9.99', 'currency', 'USD'),
         'step', NULL, 'attempt', 0, 'done', jsonb_build_array('payment', 'inventory', 'approval'),
         'awaiting', jsonb_build_array(), 'deadline_at', NULL, 'reason', NULL, 'version', 4),
       4,
       now() - make_interval(secs => ($1::float8 * 3600) * (1 - i::float8 / $2)),
       now() - make_interval(secs => ($1::float8 * 3600) * (1 - i::float8 / $2))
  FROM generate_series(1, $2) AS i;
"""
SEED_LOG = """
INSERT INTO saga_log (saga, saga_id, at, event, step, status, detail)
SELECT 'order', md5('o' || i)::uuid::text,
       now() - make_interval(secs => ($1::float8 * 3600) * (1 - i::float8 / $2)) + e.n * interval '10 ms',
       e.event, e.step, CASE WHEN e.n = 8 THEN 'COMPLETED' ELSE 'RUNNING' END,
       jsonb_build_object('message_id', md5('m' || i || e.n)::uuid::text)
  FROM generate_series(1, $2) AS i,
       (VALUES (1, 'started', 'payment'), (2, 'command_sent', 'payment'),
               (3, 'reply', 'payment'), (4, 'command_sent', 'inventory'),
               (5, 'reply', 'inventory'), (6, 'command_sent', 'approval'),
               (7, 'reply', 'approval'), (8, 'completed', NULL)) AS e(n, event, step);
"""
SEED_STUCK = """
INSERT INTO saga_instance (saga, id, status, step, attempt, state, version, deadline_at)
SELECT 'order', id, 'RUNNING', 'payment', 3,
       jsonb_build_object('id', id, 'status', 'RUNNING',
                          'data', jsonb_build_object('order_id', id, 'customer_id', 'cust-1'),
                          'step', 'payment', 'attempt', 3, 'done', jsonb_build_array(),
                          'awaiting', jsonb_build_array(), 'deadline_at', NULL, 'reason', NULL,
                          'version', 3),
       3, now() - interval '1 minute'
  FROM (SELECT gen_random_uuid()::text AS id FROM generate_series(1, $1)) AS s;
"""
SEED_PAYMENTS = """
INSERT INTO payments (order_id, customer_id, amount, status)
SELECT md5('o' || i)::uuid, 'cust-' || (i % 500), 9.99, 'CAPTURED' FROM generate_series(1, $1) AS i;
INSERT INTO ledger (order_id, customer_id, kind, amount)
SELECT md5('o' || i)::uuid, 'cust-' || (i % 500), 'charge', 9.99 FROM generate_series(1, $1) AS i;
"""
SEED_RESERVATIONS = """
INSERT INTO reservations (order_id, status)
SELECT md5('o' || i)::uuid, 'RESERVED' FROM generate_series(1, $1) AS i;
INSERT INTO reservation_lines (order_id, sku, quantity)
SELECT md5('o' || i)::uuid, 'WIDGET', 1 FROM generate_series(1, $1) AS i;
"""


async def _admin_run(
    settings: Settings, service: str, *statements: tuple[str, tuple[Any, ...]]
) -> None:
    dsn = dsn_for(settings.pg_admin_dsn, database_of(settings.dsn_for(service)))
    async with connection(dsn) as conn:
        for sql, args in statements:
            if args:
                await conn.execute(sql, *args)
            else:
                await conn.execute(sql)
        await conn.execute("ANALYZE")


async def seed(settings: Settings, *, sagas: int, letters: int, stuck: int = 50) -> None:
    hours = 48.0
    await _admin_run(settings, "order_svc", (SEED_ORDERS, (hours, sagas)), (SEED_LINES, (sagas,)))
    await _admin_run(
        settings,
        "saga",
        (SEED_SAGAS, (hours, sagas)),
        (SEED_LOG, (hours, sagas)),
        (SEED_STUCK, (stuck,)),
    )
    await _admin_run(settings, "payment_svc", *((s, (sagas,)) for s in _split(SEED_PAYMENTS)))
    await _admin_run(settings, "inventory_svc", *((s, (sagas,)) for s in _split(SEED_RESERVATIONS)))
    amqp = await amqp_connect(settings.amqp_url, name="orderflow-bench-console")
    try:
        channel = await amqp.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        for i in range(letters):
            error = ERRORS[i % len(ERRORS)]
            letter_id = str(uuid.uuid4())
            body = {
                "specversion": "1.0",
                "id": letter_id,
                "source": "/bench",
                "type": "order.place_order.v1",
                "time": datetime.now(UTC).isoformat(),
                "data": {"order_id": str(uuid.uuid4()), "customer_id": f"cust-{i}", "items": []},
            }
            await exchange.publish(
                aio_pika.Message(
                    json.dumps(body).encode(),
                    message_id=letter_id,
                    type="order.place_order.v1",
                    timestamp=datetime.now(UTC),
                    content_type="application/cloudevents+json",
                    headers={
                        ERROR_CLASS: error,
                        ERROR_MESSAGE: f"{error}: seeded for the console benchmark",
                        ERROR_SERVICE: "order_svc",
                        ERROR_ATTEMPTS: 3,
                        ORIGINAL_EXCHANGE: "order.commands",
                        ORIGINAL_ROUTING_KEY: "order.place_order.v1",
                    },
                ),
                routing_key="order_svc.commands.dlq",
            )
        await channel.close()
    finally:
        await amqp.close()


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


async def console_bench(
    base: Settings,
    *,
    sagas: int = 100_000,
    letters: int = 1_000,
    rounds: int = 30,
    target_p95_ms: float = TARGET_P95_MS,
) -> dict[str, Any]:
    """Seed an isolated system, serve the console on it, time each page ``rounds`` times."""
    from orderflow.chaos.harness import isolated

    async with isolated(base) as env:
        settings = Settings.of({**os.environ, **env})
        await setup(settings)
        started = time.monotonic()
        await seed(settings, sagas=sagas, letters=letters)
        seeded_s = time.monotonic() - started
        runner = web.AppRunner(create_app(settings, ConsoleSettings()), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base_url = f"http://127.0.0.1:{port}"
        pages: dict[str, dict[str, float]] = {}
        try:
            async with aiohttp.ClientSession() as http:
                deep = await _deep_cursor(http, base_url, pages_deep=20)
                some_letter = await _first_letter(http, base_url)
                paths = {
                    "overview": "/",
                    "overview (live part)": "/live/overview",
                    "orders": "/orders",
                    "orders of a customer": "/orders?customer=cust-7",
                    "orders, 20 pages deep": "/orders?after=" + deep,
                    "sagas (stuck first)": "/sagas",
                    "sagas completed of a customer": "/sagas?state=COMPLETED&customer=cust-7",
                    "sagas older than an hour": "/sagas?older=3600",
                    "stuck (live part)": "/live/stuck",
                    "one order": "/orders/" + str(uuid.UUID(_md5("o" + str(sagas // 2)))),
                    "dead letters": "/letters",
                    "dead letters, read now": "/letters?fresh=1",
                    "one group of letters, 20 pages deep": await _deep_letters(
                        http, base_url, pages_deep=min(20, letters // 50)
                    ),
                    "one dead letter": "/letters/" + some_letter,
                }
                for name, path in paths.items():
                    samples = []
                    for _ in range(rounds):
                        t0 = time.perf_counter()
                        async with http.get(base_url + path) as response:
                            await response.read()
                            if response.status != 200:
                                raise RuntimeError(f"{path} answered {response.status}")
                        samples.append((time.perf_counter() - t0) * 1000)
                    pages[name] = {"path": path, **_figures(samples)}  # type: ignore[dict-item]
        finally:
            await runner.cleanup()
    worst = max(p["p95_ms"] for p in pages.values())
    return {
        "sagas": sagas,
        "dead_letters": letters,
        "rounds": rounds,
        "seeded_in_s": round(seeded_s, 1),
        "pages": pages,
        "worst_p95_ms": worst,
        "target_p95_ms": target_p95_ms,
        "ok": worst <= target_p95_ms,
    }


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


async def _deep_cursor(http: aiohttp.ClientSession, base_url: str, *, pages_deep: int) -> str:
    """The cursor of the order page ``pages_deep`` pages in, followed link by link."""
    path = "/orders"
    for _ in range(pages_deep):
        async with http.get(base_url + path) as response:
            found = re.search(r'id="next" href="([^"]+)"', await response.text())
        if not found:
            break
        path = found.group(1).replace("&amp;", "&")
    return path.split("after=", 1)[1] if "after=" in path else ""


async def _deep_letters(http: aiohttp.ClientSession, base_url: str, *, pages_deep: int) -> str:
    """The page of the largest group ``pages_deep`` pages in, followed link by link."""
    async with http.get(base_url + "/letters") as response:
        found = re.search(r'class="whole-group" href="([^"]+)"', await response.text())
    path = found.group(1).replace("&amp;", "&") if found else "/letters"
    for _ in range(pages_deep):
        async with http.get(base_url + path) as response:
            more = re.search(r'id="next" href="([^"]+)"', await response.text())
        if not more:
            break
        path = more.group(1).replace("&amp;", "&")
    return path


async def _first_letter(http: aiohttp.ClientSession, base_url: str) -> str:
    async with http.get(base_url + "/letters") as response:
        found = re.search(r'<tr data-letter="([^"]+)"', await response.text())
    if not found:
        raise RuntimeError("the seeded dead letters are not listed")
    return found.group(1)
