"""The console over HTTP against a running system: pages, keyed pages, and every guard
(CSRF, origin, roles, escaping, headers) tried by someone who should be refused."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from contracts import REGISTRY
from contracts.order import PlaceOrder
from libs.messages import codec
from libs.messaging.publisher import Outgoing, Publisher
from libs.settings import Settings
from orderflow.console import ConsoleSettings, create_app
from orderflow.console.access import add_user

from .conftest import System

pytestmark = pytest.mark.e2e
OPERATOR = ("olga", "operator password 1")
VIEWER = ("vic", "viewer password 22")


def place_order_body(order_id: str, **data: Any) -> bytes:
    """A PlaceOrder as a client would send it, with ``data`` written over its fields."""
    command = PlaceOrder.model_validate(
        {"order_id": order_id, "customer_id": "alice", "items": [{"sku": "WIDGET", "quantity": 1}]}
    )
    envelope = REGISTRY.envelope(command, source="/test", subject=order_id, correlation_id=order_id)
    doc = json.loads(codec.encode(envelope))
    doc["data"].update(data)
    return json.dumps(doc).encode()


async def publish_raw(system: System, body: bytes, message_id: str | None = None) -> str:
    message_id = message_id or str(uuid.uuid4())
    publisher = Publisher(system.client._connection)
    try:
        await publisher.publish(
            Outgoing(
                exchange="order.commands",
                routing_key=PlaceOrder.TYPE,
                body=body,
                message_id=message_id,
                type=PlaceOrder.TYPE,
                timestamp=datetime.now(UTC),
            )
        )
    finally:
        await publisher.close()
    return message_id


@asynccontextmanager
async def console_client(settings: Settings, **console: Any) -> AsyncIterator[TestClient[Any, Any]]:
    add_user(settings.secrets_dir, OPERATOR[0], "operator", OPERATOR[1])
    add_user(settings.secrets_dir, VIEWER[0], "viewer", VIEWER[1])
    app = create_app(settings, ConsoleSettings(**console))
    async with TestClient(TestServer(app)) as client:
        yield client


async def csrf_of(client: TestClient[Any, Any], path: str = "/login") -> str:
    page = await (await client.get(path)).text()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


async def log_in(client: TestClient[Any, Any], who: tuple[str, str]) -> str:
    token = await csrf_of(client)
    response = await client.post(
        "/login",
        data={"csrf": token, "user": who[0], "password": who[1]},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return await csrf_of(client, "/")


ACTIONS = [
    ("/orders/{order}/retry", {"reason": "test"}),
    ("/orders/{order}/compensate", {"reason": "test"}),
    ("/letters/replay", {"all": "yes"}),
    ("/letters/purge", {"all": "yes", "confirm": "yes"}),
    ("/letters/{letter}/edit", {"body": "{}"}),
]


async def test_pages_guards_and_pagination(system: System) -> None:
    placed = [await system.place("alice", ("WIDGET", 1, "9.99")) for _ in range(5)]
    await system.wait(placed)
    hostile = "<script>alert('x')</script>"
    unreadable = b'{"specversion": "1.0", "data": "' + hostile.encode() + b'"'  # cut short
    letter = await publish_raw(system, unreadable)
    async with console_client(system.settings, page_size=2) as client:
        # every page answers, hardened
        for path in ("/", "/live/overview", "/orders", "/sagas", "/live/stuck", "/letters"):
            response = await client.get(path)
            assert response.status == 200, (path, await response.text())
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Frame-Options"] == "DENY"
        # another host name (DNS rebinding) is refused before anything is read
        assert (await client.get("/", headers={"Host": "evil.example:8088"})).status == 421
        order_page = await client.get(f"/orders/{placed[0]}")
        assert order_page.status == 200
        assert "CONFIRMED" in await order_page.text()
        assert (await client.get(f"/orders/{uuid.uuid4()}")).status == 404
        for bad in (
            "/orders/not-an-id",
            "/orders?status=LOST",
            "/sagas?after=x",
            "/sagas?older=nan",
        ):
            assert (await client.get(bad)).status == 400, bad

        # keyed pages: five orders, two per page, each seen once
        seen: list[str] = []
        path: str | None = "/orders"
        while path:
            page = await (await client.get(path)).text()
            seen += re.findall(r'<tr data-order="([0-9a-f-]{36})"', page)
            found = re.search(r'id="next" href="([^"]+)"', page)
            path = found.group(1).replace("&amp;", "&") if found else None
        assert sorted(seen) == sorted(placed)

        # a stranger's markup in a dead letter is shown, never run
        for _ in range(50):
            letters_page = await (await client.get("/letters")).text()
            if letter in letters_page:
                break
            await asyncio.sleep(0.2)
        shown = await (await client.get(f"/letters/{letter}")).text()
        assert hostile not in shown and "&lt;script&gt;" in shown

        targets = {"order": placed[0], "letter": letter}
        token = await csrf_of(client)
        for path, form in ACTIONS:
            # a visitor with a good token is still not an operator
            response = await client.post(path.format(**targets), data={**form, "csrf": token})
            assert response.status == 403, path
            assert "log in" in await response.text()

        # a wrong password is refused and says nothing more
        response = await client.post(
            "/login", data={"csrf": token, "user": OPERATOR[0], "password": "wrong password"}
        )
        assert response.status == 401
        # the viewer reads, and every action is refused
        token = await log_in(client, VIEWER)
        assert "vic (viewer)" in await (await client.get("/")).text()
        for path, form in ACTIONS:
            response = await client.post(path.format(**targets), data={**form, "csrf": token})
            assert response.status == 403, path
            assert "read-only" in await response.text()

        # the operator acts; a finished saga refuses retry and compensation with the reason
        token = await log_in(client, OPERATOR)
        # ...but not without the form's token, with another one, or from another origin
        for path, form in ACTIONS:
            url = path.format(**targets)
            assert (await client.post(url, data=form)).status == 403
            assert (await client.post(url, data={**form, "csrf": "x" * 43})).status == 403
            response = await client.post(
                url, data={**form, "csrf": token}, headers={"Origin": "http://evil.example"}
            )
            assert response.status == 403
            assert "CSRF" in await (await client.post(url, data=form)).text()
        assert letter in await (await client.get("/letters")).text()  # nothing was purged
        response = await client.post(
            f"/orders/{placed[0]}/compensate", data={"reason": "too late", "csrf": token}
        )
        assert response.status == 409
        assert "COMPLETED, not RUNNING" in await response.text()
        response = await client.post(
            f"/orders/{placed[0]}/compensate", data={"reason": " ", "csrf": token}
        )
        assert response.status == 400  # a reason is required
        # purge asks first, then deletes only what was chosen
        response = await client.post("/letters/purge", data={"id": letter, "csrf": token})
        assert response.status == 200 and "cannot be undone" in await response.text()
        assert letter in await (await client.get("/letters")).text()
        response = await client.post(
            "/letters/purge", data={"id": letter, "csrf": token, "confirm": "yes"}
        )
        assert "deleted 1 dead letter" in await response.text()
        assert letter not in await (await client.get("/letters")).text()
        # logging out ends the session
        await client.post("/logout", data={"csrf": token})
        assert "read-only visitor" in await (await client.get("/")).text()
