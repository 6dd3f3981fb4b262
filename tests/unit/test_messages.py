"""The envelope, the codec and the registry: pure, no I/O."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from libs.errors import (
    ConfigurationError,
    InvalidMessageData,
    MalformedMessage,
    MessageTooLarge,
    UnknownMessageType,
    UnknownMessageVersion,
    UnsupportedContentType,
)
from libs.messages import codec
from libs.messages.envelope import CONTENT_TYPE, Envelope
from libs.messages.registry import Command, Event, MessageRegistry, parse_type


class Charge(Command):
    TYPE = "pay.charge.v1"
    amount: Decimal


class Charged(Event):
    TYPE = "pay.charged.v1"
    amount: Decimal


class ChargedV2(Event):
    TYPE = "pay.charged.v2"
    amount: Decimal
    currency: str


REGISTRY = MessageRegistry(Charge, Charged, ChargedV2)


def make_envelope(**data: object) -> Envelope:
    return Envelope(
        id=str(uuid.uuid4()),
        source="/orderflow/test",
        type="pay.charge.v1",
        time=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        data=dict(data) or {"amount": "12.50"},
        subject="order-1",
        correlationid="corr",
        causationid="cause",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


def test_an_envelope_survives_encode_and_decode_unchanged() -> None:
    envelope = make_envelope()
    assert (
        codec.decode(codec.encode(envelope), content_type=CONTENT_TYPE, max_bytes=10_000)
        == envelope
    )


def test_the_encoded_event_is_structured_cloudevents_json() -> None:
    doc = json.loads(codec.encode(make_envelope()))
    assert doc["specversion"] == "1.0"
    assert doc["time"] == "2026-11-26T12:00:00Z"
    assert doc["datacontenttype"] == "application/json"
    assert {"correlationid", "causationid", "traceparent", "subject"} <= doc.keys()
    assert "tracestate" not in doc  # absent attributes are left out, not null


def test_unknown_extension_attributes_are_kept() -> None:
    doc = json.loads(codec.encode(make_envelope()))
    doc["partitionkey"] = "p1"
    decoded = codec.decode(json.dumps(doc).encode(), content_type=None, max_bytes=10_000)
    assert decoded.extensions == {"partitionkey": "p1"}


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"not json", CONTENT_TYPE, MalformedMessage),
        (b"\xff\xfe", CONTENT_TYPE, MalformedMessage),
        (b'"a string"', CONTENT_TYPE, MalformedMessage),
        (b"{}", CONTENT_TYPE, MalformedMessage),
        (b"{}", "application/xml", UnsupportedContentType),
        (b"x" * 2000, CONTENT_TYPE, MessageTooLarge),
    ],
)
def test_bodies_that_are_not_events_raise_poison_errors(
    body: bytes, content_type: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        codec.decode(body, content_type=content_type, max_bytes=1024)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "42"}, "not a UUID"),
        ({"id": None}, "'id' is missing"),
        ({"time": "yesterday"}, "RFC 3339"),
        ({"time": "2026-11-26T12:00:00"}, "UTC offset"),
        ({"data": [1]}, "data must be a JSON object"),
        ({"source": 7}, "non-empty string"),
        ({"type": "t" * 600}, "longer than"),
    ],
)
def test_each_broken_attribute_is_named_in_the_error(
    change: dict[str, object], reason: str
) -> None:
    doc = json.loads(codec.encode(make_envelope()))
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(MalformedMessage, match=reason):
        codec.decode(json.dumps(doc).encode(), content_type=None, max_bytes=10_000)


def test_a_non_json_datacontenttype_is_refused() -> None:
    doc = json.loads(codec.encode(make_envelope()))
    doc["datacontenttype"] = "application/xml"
    with pytest.raises(UnsupportedContentType):
        codec.decode(json.dumps(doc).encode(), content_type=None, max_bytes=10_000)


def test_a_type_name_splits_into_context_name_and_version() -> None:
    assert parse_type("order.place_order.v1") == ("order", "place_order", 1)
    for bad in ("order.place_order", "Order.place.v1", "order.place.v0", "a.b.c.v1"):
        with pytest.raises(UnknownMessageType):
            parse_type(bad)


def test_commands_and_events_travel_on_their_contexts_exchanges() -> None:
    assert REGISTRY.spec("pay.charge.v1").exchange == "pay.commands"
    assert REGISTRY.spec("pay.charged.v2").exchange == "pay.events"
    assert REGISTRY.spec_of(Charged).routing_key == "pay.charged.v1"


def test_parse_returns_the_model_with_decimals_from_strings() -> None:
    message = REGISTRY.parse(make_envelope(amount="12.50"))
    assert message == Charge(amount=Decimal("12.50"))


def test_data_that_breaks_the_schema_raises_invalid_data_naming_the_field() -> None:
    with pytest.raises(InvalidMessageData, match="amount"):
        REGISTRY.parse(make_envelope(amount="lots"))
    with pytest.raises(InvalidMessageData, match="extra"):
        REGISTRY.parse(make_envelope(amount="1", extra="field"))


def test_an_unknown_version_of_a_known_type_is_told_apart_from_an_unknown_type() -> None:
    base = make_envelope()
    with pytest.raises(UnknownMessageVersion, match=r"known versions: \[1, 2\]"):
        REGISTRY.parse(Envelope(**{**_fields(base), "type": "pay.charged.v3"}))
    with pytest.raises(UnknownMessageType) as info:
        REGISTRY.parse(Envelope(**{**_fields(base), "type": "pay.refund.v1"}))
    assert not isinstance(info.value, UnknownMessageVersion)


def test_envelope_builds_the_wire_form_of_a_message() -> None:
    envelope = REGISTRY.envelope(
        Charged(amount=Decimal("3.10")), source="/s", subject="o1", correlation_id="c"
    )
    assert envelope.type == "pay.charged.v1"
    assert envelope.data == {"amount": "3.10"}
    assert uuid.UUID(envelope.id)
    assert envelope.correlationid == "c"


def test_registering_a_model_without_a_valid_type_fails() -> None:
    class NoType(Command):
        pass

    class BadType(Command):
        TYPE = "Nope"

    with pytest.raises(ConfigurationError):
        MessageRegistry(NoType)
    with pytest.raises(ConfigurationError):
        MessageRegistry(BadType)


def test_messages_are_immutable() -> None:
    message = Charge(amount=Decimal(1))
    with pytest.raises(ValueError, match="frozen"):
        message.amount = Decimal(2)  # type: ignore[misc]


def _fields(envelope: Envelope) -> dict[str, object]:
    return {name: getattr(envelope, name) for name in envelope.__dataclass_fields__}
