"""Bad messages the poison scenario mixes into the good ones; each must end in a dead-letter queue,
or, for a PlaceOrder whose data is invalid, be answered with a refusal.

Every injected message has a fresh AMQP ``message_id`` and the header ``x-chaos-poison`` naming
its kind, so the report can match dead letters against what was injected, one for one.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from libs.messages.envelope import CONTENT_TYPE

# A PlaceOrder whose data fails its schema is answered (OrderRejected, order stored refused),
# not dead-lettered: the client hears back on order.events.
ANSWERED = "answered"
FORGED_LOG_LINE = '{"event":"forged","level":"error","service":"order_svc"}'


@dataclass(frozen=True)
class Poison:
    kind: str
    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    content_type: str = CONTENT_TYPE
    expected_error: str = ""
    headers: dict[str, Any] = field(default_factory=dict)


def _event(type_: str, data: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/chaos/poison",
        "type": type_,
        "time": "2026-11-26T12:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    }
    for key in drop:
        doc.pop(key)
    return doc


def _order(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": str(uuid.uuid4()),
        "customer_id": "carol",
        "items": [{"sku": "SPROCKET", "quantity": 1, "unit_price": "2.25"}],
    }
    data.update(changes)
    return data


def _line(**changes: Any) -> list[dict[str, Any]]:
    return [{"sku": "SPROCKET", "quantity": 1, "unit_price": "2.25", **changes}]


PLACE = "order.place_order.v1"
_KINDS: dict[str, Callable[[], tuple[str, str, bytes, str, str]]] = {
    # kind: () -> (exchange, routing key, body, content type, expected error class)
    "malformed-json": lambda: (
        "order.commands",
        PLACE,
        b'{"specversion": "1.0", "id": ',
        CONTENT_TYPE,
        "MalformedMessage",
    ),
    "not-utf8": lambda: (
        "order.commands",
        PLACE,
        b"\xff\xfe\x00\x81garbage",
        CONTENT_TYPE,
        "MalformedMessage",
    ),
    "wrong-content-type": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order())).encode(),
        "text/plain",
        "UnsupportedContentType",
    ),
    "schema-invalid": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order(items=_line(quantity="many")))).encode(),
        CONTENT_TYPE,
        ANSWERED,
    ),
    "unknown-type": lambda: (
        "order.commands",
        "order.cancel_everything.v1",
        json.dumps(_event("order.cancel_everything.v1", {})).encode(),
        CONTENT_TYPE,
        "UnknownMessageType",
    ),
    "unknown-version": lambda: (
        "order.commands",
        "order.place_order.v7",
        json.dumps(_event("order.place_order.v7", _order())).encode(),
        CONTENT_TYPE,
        "UnknownMessageVersion",
    ),
    "oversize": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order(customer_id="x" * 300_000))).encode(),
        CONTENT_TYPE,
        "MessageTooLarge",
    ),
    "missing-id": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order(), drop=("id",))).encode(),
        CONTENT_TYPE,
        "MalformedMessage",
    ),
    "log-injection": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order(customer_id="mallory\n" + FORGED_LOG_LINE))).encode(),
        CONTENT_TYPE,
        ANSWERED,
    ),
    "negative-quantity": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order(items=_line(quantity=-3)))).encode(),
        CONTENT_TYPE,
        ANSWERED,
    ),
    "sub-cent-price": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order(items=_line(unit_price="9.999")))).encode(),
        CONTENT_TYPE,
        ANSWERED,
    ),
    "empty-items": lambda: (
        "order.commands",
        PLACE,
        json.dumps(_event(PLACE, _order(items=[]))).encode(),
        CONTENT_TYPE,
        ANSWERED,
    ),
    "negative-amount": lambda: (
        "payment.commands",
        "payment.process_payment.v1",
        json.dumps(
            _event(
                "payment.process_payment.v1",
                {"order_id": str(uuid.uuid4()), "customer_id": "carol", "amount": "-100.00"},
            )
        ).encode(),
        CONTENT_TYPE,
        "InvalidMessageData",
    ),
    "bad-order-id-event": lambda: (
        "payment.events",
        "payment.payment_captured.v1",
        json.dumps(
            _event(
                "payment.payment_captured.v1",
                {"order_id": "../../etc/passwd", "customer_id": "carol", "amount": "1.00"},
            )
        ).encode(),
        CONTENT_TYPE,
        "InvalidMessageData",
    ),
}
KINDS = tuple(_KINDS)


def make(kind: str) -> Poison:
    exchange, routing_key, body, content_type, expected = _KINDS[kind]()
    message_id = str(uuid.uuid4())
    return Poison(
        kind,
        exchange,
        routing_key,
        body,
        message_id,
        content_type,
        expected,
        {"x-chaos-poison": kind},
    )


def batch(rng: random.Random, count: int) -> list[Poison]:
    """``count`` bad messages: every kind at least once when count allows, the rest drawn."""
    kinds = list(KINDS)[:count] + [rng.choice(KINDS) for _ in range(max(0, count - len(KINDS)))]
    rng.shuffle(kinds)
    return [make(k) for k in kinds]
