"""The hostile-input corpus: what a stranger may send to the public order exchange.

Each :class:`HostileCase` builds one message (body and AMQP properties) for a fresh CloudEvent id
and says what the system must do with it: dead-letter it with a reason of a given class, or
answer it on ``order.events`` (a refused ``PlaceOrder`` that names, or lets us derive, an order
id). ``tests/e2e/test_hostile_input.py`` sends every case in bulk, the ``hostile-clients`` chaos
scenario mixes them into a steady order load; ``docs/security.md`` describes them.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aio_pika

from libs.messaging.admin import delete_user, ensure_user, vhost_of
from libs.secrets import with_credentials

PLACE = "order.place_order.v1"
CONTENT_TYPE = "application/cloudevents+json"
Outcome = Literal["dead-letter", "answer"]
DEAD: Outcome = "dead-letter"
ANSWER: Outcome = "answer"


@dataclass(frozen=True)
class Hostile:
    """One message as it goes on the wire."""

    body: bytes
    type: str | None = PLACE
    content_type: str | None = CONTENT_TYPE
    content_encoding: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    routing_key: str = PLACE

    def message(self, message_id: str) -> aio_pika.Message:
        """As it goes on the wire, with an AMQP message id of its own."""
        return aio_pika.Message(
            self.body,
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            headers=self.headers,
            type=self.type,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )


@asynccontextmanager
async def stranger(amqp_url: str, *, prefix: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A confirm-mode channel of a client's own broker account (``<prefix>stranger``), which
    may publish to ``order.commands`` and nothing else; the account is deleted afterwards."""
    user, password = f"{prefix}stranger", secrets.token_urlsafe(16)
    await ensure_user(
        user,
        password,
        vhost=vhost_of(amqp_url),
        configure="^$",
        write=r"^order\.commands$",
        read="^$",
    )
    try:
        connection = await aio_pika.connect_robust(
            with_credentials(amqp_url, user=user, password=password)
        )
        try:
            yield await connection.channel(publisher_confirms=True)
        finally:
            await connection.close()
    finally:
        await delete_user(user)


@dataclass(frozen=True)
class HostileCase:
    name: str
    what: str
    build: Callable[[str], Hostile]  # called with a fresh uuid for the event id
    expect: Outcome
    error_class: str = "MalformedMessage"  # a dead letter's x-orderflow-error-class


def event(message_id: str, data: Any = None, **attributes: Any) -> dict[str, Any]:
    """A valid ``PlaceOrder`` CloudEvent, with attributes and data replaced as given."""
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": message_id,
        "source": "/hostile/client",
        "type": PLACE,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data if data is not None else order(),
    }
    doc.update(attributes)
    return doc


def order(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": str(uuid.uuid4()),
        "customer_id": "alice",
        "items": [{"sku": "SPROCKET", "quantity": 1}],
        "currency": "USD",
    }
    data.update(changes)
    return data


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _body(text: str) -> Callable[[str], Hostile]:
    return lambda _: Hostile(text.encode())


def _raw(build: Callable[[str], bytes], **props: Any) -> Callable[[str], Hostile]:
    return lambda mid: Hostile(build(mid), **props)


def _doc(build: Callable[[str], Any], **props: Any) -> Callable[[str], Hostile]:
    return lambda mid: Hostile(_json(build(mid)), **props)


def _deep(depth: int, opening: str = "[", closing: str = "]") -> str:
    return opening * depth + closing * depth


def _deep_data(mid: str) -> bytes:
    nested = '{"a":' * 3000 + "1" + "}" * 3000
    text = json.dumps(event(mid, data={"x": 0}))
    return text.replace('{"x": 0}', nested).encode()


def _with_literal(mid: str, literal: str) -> bytes:
    text = json.dumps(event(mid, data=order(items=[{"sku": "SPROCKET", "quantity": 7}])))
    return text.replace('"quantity": 7', f'"quantity": {literal}').encode()


def _duplicate_keys(mid: str) -> bytes:
    text = json.dumps(event(mid))
    return text.replace(
        '"specversion": "1.0"', f'"id": "{uuid.uuid4()}", "specversion": "1.0"'
    ).encode()


ROCKETS = "order.launch_rockets.v1"  # an unknown type: header cases travel the dead-letter path


def _headed(headers: dict[str, Any]) -> Callable[[str], Hostile]:
    return lambda mid: Hostile(_json(event(mid, type=ROCKETS)), type=ROCKETS, headers=headers)


CORPUS: tuple[HostileCase, ...] = (
    HostileCase("deep-array", "a 4 KB body of 2,000 nested arrays", _body(_deep(2000)), DEAD),
    HostileCase("deep-object", "10,000 nested objects", _body(_deep(10000, '{"a":', "}")), DEAD),
    HostileCase("deep-data", "a valid event whose data nests 3,000 deep", _raw(_deep_data), DEAD),
    HostileCase(
        "huge-exponent", "quantity 1e999999", _raw(lambda m: _with_literal(m, "1e999999")), DEAD
    ),
    HostileCase(
        "negative-huge-exponent",
        "quantity -1e999999",
        _raw(lambda m: _with_literal(m, "-1e999999")),
        DEAD,
    ),
    HostileCase(
        "long-integer", "a 5,000-digit quantity", _raw(lambda m: _with_literal(m, "9" * 5000)), DEAD
    ),
    HostileCase("nan", "quantity NaN", _raw(lambda m: _with_literal(m, "NaN")), DEAD),
    HostileCase(
        "infinity", "quantity Infinity", _raw(lambda m: _with_literal(m, "Infinity")), DEAD
    ),
    HostileCase("duplicate-keys", "the attribute id given twice", _raw(_duplicate_keys), DEAD),
    HostileCase(
        "invalid-utf8",
        "a body with bytes that are not UTF-8",
        _raw(lambda m: _json(event(m)).replace(b"alice", b"al\xff\xfece")),
        DEAD,
    ),
    HostileCase(
        "bom", "a UTF-8 byte order mark", _raw(lambda m: b"\xef\xbb\xbf" + _json(event(m))), DEAD
    ),
    HostileCase(
        "utf16",
        "the event encoded as UTF-16",
        _raw(lambda m: json.dumps(event(m)).encode("utf-16")),
        DEAD,
    ),
    HostileCase(
        "lone-surrogate",
        "a customer id with a lone surrogate escape",
        _raw(lambda m: _json(event(m)).replace(b'"alice"', b'"\\ud800alice"')),
        DEAD,
    ),
    HostileCase(
        "nul-in-string",
        "NUL characters in a string PostgreSQL cannot store",
        _doc(lambda m: event(m, data=order(customer_id="al\u0000ice"))),
        ANSWER,
    ),
    HostileCase(
        "nul-in-attribute",
        "a NUL in the correlationid a handler copies into its outbox",
        _doc(lambda m: event(m, correlationid="c\u0000d")),
        DEAD,
    ),
    HostileCase("empty", "an empty body", _body(""), DEAD),
    HostileCase("null", "the JSON document null", _body("null"), DEAD),
    HostileCase(
        "top-level-array", "a JSON array instead of an event", _doc(lambda m: [event(m)]), DEAD
    ),
    HostileCase("id-number", "id as a number", _doc(lambda m: event(m, id=12345)), DEAD),
    HostileCase(
        "id-not-uuid", "id that is not a UUID", _doc(lambda m: event(m, id="x' OR 1=1")), DEAD
    ),
    HostileCase("data-list", "data as a list", _doc(lambda m: event(m, data=[1, 2])), DEAD),
    HostileCase(
        "items-object",
        "items as an object",
        _doc(lambda m: event(m, data=order(items={"sku": "SPROCKET"}))),
        ANSWER,
    ),
    HostileCase(
        "quantity-string",
        "quantity as a string",
        _doc(lambda m: event(m, data=order(items=[{"sku": "SPROCKET", "quantity": "1"}]))),
        ANSWER,
    ),
    HostileCase(
        "customer-object",
        "customer_id as an object",
        _doc(lambda m: event(m, data=order(customer_id={"$ne": None}))),
        ANSWER,
    ),
    HostileCase(
        "specversion", "specversion 0.3", _doc(lambda m: event(m, specversion="0.3")), DEAD
    ),
    HostileCase(
        "long-string",
        "a 200 KB customer id (under the body limit)",
        _doc(lambda m: event(m, data=order(customer_id="A" * 200_000))),
        DEAD,
    ),
    HostileCase(
        "many-keys",
        "12,000 keys in data (under the body limit)",
        _doc(lambda m: event(m, data={f"k{i}": i for i in range(12_000)})),
        DEAD,
    ),
    HostileCase(
        "many-items",
        "8,000 order lines (under the body limit)",
        _doc(lambda m: event(m, data=order(items=[{"sku": "A", "quantity": 1}] * 8_000))),
        DEAD,
    ),
    HostileCase(
        "oversize",
        "a 300 KB body (over the limit)",
        _doc(lambda m: event(m, pad="x" * 300_000)),
        DEAD,
        "MessageTooLarge",
    ),
    HostileCase(
        "traceparent-garbage",
        "a traceparent that is not one",
        _headed({"traceparent": "00-zz-yy-01"}),
        DEAD,
        "UnknownMessageType",
    ),
    HostileCase(
        "traceparent-bytes",
        "traceparent bytes that are not text",
        _headed({"traceparent": bytearray(b"\xff\xfe\x00")}),
        DEAD,
        "UnknownMessageType",
    ),
    HostileCase(
        "tracestate-huge",
        "a 100 KB tracestate",
        _headed(
            {
                "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                "tracestate": "k=" + "v" * 100_000,
            }
        ),
        DEAD,
        "UnknownMessageType",
    ),
    HostileCase(
        "binary-headers",
        "headers of bytes, nested tables and arrays, a forged x-orderflow header",
        _headed(
            {
                "x-bin": bytearray(b"\x00\xff" * 100),
                "x-table": {"a": {"b": {"c": [1, 2, {"d": bytearray(b"\xff")}]}}},
                "x-orderflow-error-class": "Forged",
            }
        ),
        DEAD,
        "UnknownMessageType",
    ),
    HostileCase(
        "content-type",
        "content type text/plain",
        lambda m: Hostile(_json(event(m)), content_type="text/plain"),
        DEAD,
        "UnsupportedContentType",
    ),
    HostileCase(
        "content-encoding",
        "content encoding gzip on a plain body",
        lambda m: Hostile(_json(event(m)), content_encoding="gzip"),
        DEAD,
        "UnsupportedContentType",
    ),
    HostileCase(
        "unknown-type",
        "a type nobody knows",
        _doc(lambda m: event(m, type="order.launch_rockets.v1")),
        DEAD,
        "UnknownMessageType",
    ),
    HostileCase(
        "future-version",
        "place_order version 9",
        _doc(lambda m: event(m, type="order.place_order.v9")),
        DEAD,
        "UnknownMessageVersion",
    ),
    HostileCase(
        "impostor-approve",
        "ApproveOrder, which only the saga may send, from a client",
        _doc(
            lambda m: event(m, type="order.approve_order.v1", data={"order_id": str(uuid.uuid4())})
        ),
        DEAD,
        "ImpostorMessage",
    ),
    HostileCase(
        "price-zero",
        "a client-chosen unit price of 0.00",
        _doc(
            lambda m: event(
                m, data=order(items=[{"sku": "WIDGET", "quantity": 1, "unit_price": "0.00"}])
            )
        ),
        ANSWER,
    ),
    HostileCase(
        "unknown-sku",
        "a SKU the catalog does not have",
        _doc(lambda m: event(m, data=order(items=[{"sku": "NOPE", "quantity": 1}]))),
        ANSWER,
    ),
)
