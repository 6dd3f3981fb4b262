"""The codec against the CloudEvents Python SDK: spec-valid events in, spec-valid events out.

Events are built by the SDK (``cloudevents`` 2.x: the long-standing API lives in
``cloudevents.v1``, the new one with the RabbitMQ binding in ``cloudevents.core``), written in
structured mode, and read by ``codec.decode``. What ``codec.encode`` writes is read back by the
SDK's own readers.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as CoreCloudEvent
from cloudevents.v1.conversion import to_structured
from cloudevents.v1.http import CloudEvent, from_http
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.messages import codec
from libs.messages.envelope import CONTENT_TYPE, Envelope

MAX_BYTES = 256 * 1024
DATA = {"amount": "12.50", "lines": [{"sku": "a-1", "qty": 2}], "note": 'quote " and \\ [ { ,'}


def sdk_event(attributes: dict[str, Any], data: Any = DATA, *, with_time: bool) -> CloudEvent:
    """An SDK event; the SDK fills in ``time`` when it is not given, so drop it when unwanted."""
    event = CloudEvent(dict(attributes), data)
    if not with_time and "time" not in attributes:
        del event["time"]
    return event


def read(event: CloudEvent) -> Envelope:
    headers, body = to_structured(event)
    return codec.decode(body, content_type=headers["content-type"], max_bytes=MAX_BYTES)


def required(**more: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "source": "/orderflow/test", "type": "pay.charge.v1", **more}


def test_an_event_with_only_the_required_attributes_is_read() -> None:
    attributes = required()
    event = sdk_event(attributes, with_time=False)
    headers, body = to_structured(event)
    doc = json.loads(body)
    assert not {"time", "subject", "datacontenttype", "dataschema"} & doc.keys()

    before = datetime.now(UTC)
    envelope = codec.decode(body, content_type=headers["content-type"], max_bytes=MAX_BYTES)
    after = datetime.now(UTC)

    assert (envelope.id, envelope.source, envelope.type) == (
        attributes["id"],
        attributes["source"],
        attributes["type"],
    )
    assert envelope.data == DATA
    assert envelope.subject is None
    assert envelope.datacontenttype == "application/json"  # the JSON format's default
    assert envelope.extensions == {}
    assert before <= envelope.time <= after  # no time on the wire: the time it was read


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("2026-11-26T12:00:00Z", datetime(2026, 11, 26, 12, tzinfo=UTC)),
        ("2026-11-26T12:00:00.5Z", datetime(2026, 11, 26, 12, 0, 0, 500_000, tzinfo=UTC)),
        (
            "2026-11-26T12:00:00.123456789+02:00",
            datetime(2026, 11, 26, 12, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "2026-11-26T12:00:00-05:30",
            datetime(2026, 11, 26, 12, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        ),
        ("2026-11-26t12:00:00z", datetime(2026, 11, 26, 12, tzinfo=UTC)),
        ("2026-11-26T12:00:00-00:00", datetime(2026, 11, 26, 12, tzinfo=UTC)),
        # RFC 3339 allows a leap second; it is read as the last second of the minute.
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_an_event_with_a_time_is_read_at_that_time(wire: str, expected: datetime) -> None:
    envelope = read(sdk_event(required(time=wire), with_time=True))
    assert envelope.time == expected
    assert envelope.time.utcoffset() == expected.utcoffset()


def test_the_sdk_default_time_is_read() -> None:
    event = sdk_event(required(), with_time=True)
    envelope = read(event)
    assert envelope.time == datetime.fromisoformat(event["time"])


def test_extension_attributes_of_every_json_type_are_kept() -> None:
    extensions = {
        "partitionkey": "order-7",
        "sequence": 42,
        "negative": -(2**31),
        "urgent": True,
        "replayed": False,
        "x": "",
        "abcdefghij0123456789": "twenty characters is the longest name",
    }
    envelope = read(sdk_event(required(**extensions), with_time=False))
    assert envelope.extensions == extensions
    assert isinstance(envelope.extensions["sequence"], int)
    assert envelope.extensions["urgent"] is True


def test_orderflow_extensions_subject_and_dataschema_are_read() -> None:
    attributes = required(
        subject="order-7",
        dataschema="https://schemas.example.com/pay/charge/v1.json",
        correlationid="corr-1",
        causationid="cause-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
    )
    envelope = read(sdk_event(attributes, with_time=False))
    assert envelope.subject == "order-7"
    assert envelope.correlationid == "corr-1"
    assert envelope.causationid == "cause-1"
    assert envelope.traceparent == attributes["traceparent"]
    assert envelope.tracestate == "vendor=1"
    # Envelope has no dataschema field: it travels with the extensions and is written back.
    assert envelope.extensions == {"dataschema": attributes["dataschema"]}
    assert json.loads(codec.encode(envelope))["dataschema"] == attributes["dataschema"]


@pytest.mark.parametrize(
    "datacontenttype",
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/json",
        "application/vnd.orderflow.charge+json",
        "application/cloudevents+json",
    ],
)
def test_any_json_datacontenttype_is_read(datacontenttype: str) -> None:
    envelope = read(sdk_event(required(datacontenttype=datacontenttype), with_time=False))
    assert envelope.datacontenttype == datacontenttype
    assert envelope.data == DATA


@pytest.mark.parametrize(
    "source",
    [
        "/orderflow/test",
        "https://example.com/orders?region=eu#x",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "mailto:ops@example.com",
        "order-service",
        "//example.com/path",
        "a%20b",
    ],
)
def test_any_uri_reference_source_is_read(source: str) -> None:
    assert read(sdk_event(required(source=source), with_time=False)).source == source


def test_events_from_the_sdk_rabbitmq_binding_are_read() -> None:
    event = CoreCloudEvent(
        {
            "id": str(uuid.uuid4()),
            "source": "/orderflow/test",
            "type": "pay.charged.v1",
            "time": datetime(2026, 11, 26, 12, 30, tzinfo=UTC),
            "subject": "order-9",
            "datacontenttype": "application/json",
            "sequence": 7,
            "urgent": True,
            "region": "eu",
        },
        dict(DATA),
    )
    message = rabbitmq.to_structured(event, JSONFormat())
    envelope = codec.decode(message.body, content_type=message.content_type, max_bytes=MAX_BYTES)
    assert (envelope.id, envelope.source, envelope.type, envelope.subject) == (
        event.get_id(),
        event.get_source(),
        event.get_type(),
        event.get_subject(),
    )
    assert envelope.time == event.get_time()
    assert envelope.data == DATA
    assert envelope.extensions == {"sequence": 7, "urgent": True, "region": "eu"}


def make_envelope(**extensions: Any) -> Envelope:
    return Envelope(
        id=str(uuid.uuid4()),
        source="/orderflow/order",
        type="order.order_placed.v1",
        time=datetime(2026, 11, 26, 12, 0, 0, 250_000, tzinfo=UTC),
        data={"order_id": "o-1", "total": "10.00", "lines": [{"sku": "a", "qty": 1}]},
        subject="o-1",
        correlationid="corr",
        causationid="cause",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
        extensions=extensions,
    )


def test_what_encode_writes_is_read_by_the_sdk() -> None:
    envelope = make_envelope(partitionkey="p1", sequence=3, replayed=False)
    event = from_http({"content-type": CONTENT_TYPE}, codec.encode(envelope))
    assert event["specversion"] == "1.0"
    assert event["id"] == envelope.id
    assert event["source"] == envelope.source
    assert event["type"] == envelope.type
    assert event["subject"] == envelope.subject
    assert event["datacontenttype"] == "application/json"
    assert datetime.fromisoformat(event["time"]) == envelope.time
    assert event.get_data() == envelope.data
    for name in ("correlationid", "causationid", "traceparent", "tracestate"):
        assert event[name] == getattr(envelope, name)
    assert (event["partitionkey"], event["sequence"], event["replayed"]) == ("p1", 3, False)


def test_what_encode_writes_passes_the_sdk_core_validation() -> None:
    """``cloudevents.core`` validates attribute types and extension names when it reads."""
    envelope = make_envelope(partitionkey="p1")
    message = rabbitmq.RabbitMQMessage(
        headers={}, content_type=CONTENT_TYPE, body=codec.encode(envelope)
    )
    event = rabbitmq.from_rabbitmq(message, JSONFormat())
    assert event.get_specversion() == "1.0"
    assert event.get_id() == envelope.id
    assert event.get_time() == envelope.time
    assert event.get_data() == envelope.data
    assert event.get_extension("correlationid") == "corr"
    assert event.get_extension("partitionkey") == "p1"


def test_an_sdk_event_survives_decode_and_encode() -> None:
    attributes = required(subject="o-1", time="2026-11-26T12:00:00Z", sequence=9, flag=True)
    decoded = read(sdk_event(attributes, with_time=True))
    again = from_http({"content-type": CONTENT_TYPE}, codec.encode(decoded))
    for name, value in attributes.items():
        assert again[name] == value
    assert again.get_data() == DATA


# Names the generated extensions must not take: the spec's own attributes, the envelope members,
# and orderflow's extensions (which are typed strings).
_TAKEN = {
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "correlationid",
    "causationid",
    "traceparent",
    "tracestate",
}
# CloudEvents Strings: any Unicode but control characters, surrogates and noncharacters (the
# noncharacters are unassigned code points, so leaving out every unassigned one covers them).
spec_strings = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Cn")), max_size=40)
extension_values = st.one_of(
    spec_strings,
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.booleans(),
)
extension_names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(lambda n: n not in _TAKEN)
json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(
    extensions=st.dictionaries(extension_names, extension_values, max_size=6),
    data=st.dictionaries(st.text(max_size=10), json_data, max_size=6),
    subject=st.none() | spec_strings.filter(bool),
    with_time=st.booleans(),
)
def test_every_spec_valid_event_the_sdk_writes_is_read(
    extensions: dict[str, Any], data: dict[str, Any], subject: str | None, with_time: bool
) -> None:
    attributes = required(**extensions)
    if subject is not None:
        attributes["subject"] = subject
    event = sdk_event(attributes, data, with_time=with_time)
    envelope = read(event)
    assert envelope.id == attributes["id"]
    assert envelope.subject == subject
    assert envelope.data == data
    assert envelope.extensions == extensions
    if with_time:
        assert envelope.time == datetime.fromisoformat(event["time"])
