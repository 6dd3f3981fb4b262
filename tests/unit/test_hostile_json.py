"""Hostile bodies: every one is refused with a PoisonMessage that says why, and nothing else.

Bodies come from anyone who can publish to the broker. ``codec.decode`` must turn each of them
into a dead letter with a reason: no RecursionError, ValueError or UnicodeDecodeError may reach
the consumer, and no body may make parsing cost more than the limits allow.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from libs.errors import (
    MalformedMessage,
    PoisonMessage,
    UnsupportedContentType,
)
from libs.messages import codec, safe_json
from libs.messages.envelope import CONTENT_TYPE, Envelope
from libs.messages.safe_json import DEFAULT_LIMITS, JsonLimits

MAX_BYTES = 16 * 1024 * 1024  # these tests are about JSON, not the body-size check before it
LIMIT = DEFAULT_LIMITS


def event(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/orderflow/test",
        "type": "pay.charge.v1",
        "time": "2026-11-26T12:00:00Z",
        "datacontenttype": "application/json",
        "data": {"amount": "12.50"},
    }
    doc.update(changes)
    return doc


def body_of(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def with_data(raw: str) -> bytes:
    """A valid event whose ``data`` member is the raw JSON text given."""
    head = body_of(event(data=None))
    assert head.endswith(b'"data": null}')
    return head[: -len(b"null}")] + raw.encode() + b"}"


def decode(body: bytes, content_type: str | None = CONTENT_TYPE) -> Envelope:
    return codec.decode(body, content_type=content_type, max_bytes=MAX_BYTES)


def nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


BIG_STRING = "x" * (LIMIT.max_string_chars + 1)

# (id, body, fragment of the reason)
HOSTILE: list[tuple[str, bytes, str]] = [
    # nesting
    ("4 KB of nested arrays (2000 deep)", nested_arrays(2000).encode(), "nests deeper than 32"),
    ("2000 nested objects", nested_objects(2000).encode(), "nests deeper than 32"),
    ("5000 unclosed brackets", b"[" * 5000, "nests deeper than 32"),
    ("deep nesting inside data", with_data(nested_arrays(40)), "nests deeper than 32"),
    ("mixed deep nesting", ('[{"a":' * 1000 + "0" + "}]" * 1000).encode(), "nests deeper"),
    ("more closing than opening brackets", b"]" * 5000, "closes more brackets"),
    # numbers
    ("1e999999", with_data('{"n": 1e999999}'), "too large for a float"),
    ("-1e999999", with_data('{"n": -1e999999}'), "too large for a float"),
    ("1e309", with_data('{"n": 1e309}'), "too large for a float"),
    ("NaN", with_data('{"n": NaN}'), "NaN is not a JSON number"),
    ("Infinity", with_data('{"n": Infinity}'), "Infinity is not a JSON number"),
    ("-Infinity", with_data('{"n": -Infinity}'), "-Infinity is not a JSON number"),
    ("5000-digit integer", with_data('{"n": ' + "9" * 5000 + "}"), "5000 characters long"),
    ("41-digit integer", with_data('{"n": ' + "1" * 41 + "}"), "41 characters long"),
    ("41-character float", with_data('{"n": 0.' + "1" * 39 + "}"), "41 characters long"),
    # duplicate keys
    (
        "duplicate id at the top",
        b'{"id": "a", "id": "b", "specversion": "1.0"}',
        "'id' more than once",
    ),
    (
        "duplicate key in data",
        with_data('{"amount": "1", "amount": "1000"}'),
        "'amount' more than once",
    ),
    ("duplicate key spelt with escapes", with_data('{"a": 1, "\\u0061": 2}'), "'a' more than once"),
    ("duplicate key deep in data", with_data('{"x": [{"k": 1, "k": 1}]}'), "'k' more than once"),
    # encodings
    (
        "invalid UTF-8 in a string",
        with_data('{"s": "?"}').replace(b"?", b"\xff"),
        "not valid UTF-8",
    ),
    ("invalid UTF-8 in a key", with_data('{"?": 1}').replace(b"?", b"\xc3\x28"), "not valid UTF-8"),
    ("overlong UTF-8", with_data('{"s": "?"}').replace(b"?", b"\xc0\xaf"), "not valid UTF-8"),
    (
        "UTF-8-encoded surrogate",
        with_data('{"s": "?"}').replace(b"?", b"\xed\xa0\x80"),
        "not valid UTF-8",
    ),
    ("truncated UTF-8 sequence", body_of(event())[:-2] + b"\xe2\x82", "not valid UTF-8"),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + body_of(event()), "byte order mark"),
    ("UTF-16 with BOM", json.dumps(event()).encode("utf-16"), "UTF-16"),
    ("UTF-16-BE without BOM", json.dumps(event()).encode("utf-16-be"), "UTF-16"),
    ("UTF-32", json.dumps(event()).encode("utf-32"), "UTF-16 or UTF-32"),
    ("lone high surrogate escape", with_data('{"s": "\\ud800"}'), "unpaired surrogate"),
    ("lone low surrogate escape", with_data('{"s": "\\udc00"}'), "unpaired surrogate"),
    ("reversed surrogate pair", with_data('{"s": "\\udc00\\ud800"}'), "unpaired surrogate"),
    ("lone surrogate escape in a key", with_data('{"\\uDBFF": 1}'), "unpaired surrogate"),
    # sizes, all well within the byte limit
    (
        "1001 small items",
        with_data('{"xs": [' + ",".join(["0"] * 1001) + "]}"),
        "more than 1000 items",
    ),
    ("128k zeros", ("[" + ",".join(["0"] * 128_000) + "]").encode(), "more than 20000 values"),
    ("100k keys", body_of({f"k{i}": 0 for i in range(100_000)}), "more than 20000 values"),
    (
        "257 keys in data",
        with_data(json.dumps({f"k{i}": 0 for i in range(257)})),
        "more than 256 keys",
    ),
    (
        "257 attributes",
        body_of(event(**{f"ext{i}": "v" for i in range(257)})),
        "more than 256 keys",
    ),
    (
        "21 arrays of 999 items",
        with_data(json.dumps({f"a{i}": [0] * 999 for i in range(21)})),
        "more than 20000 values",
    ),
    (
        "20k empty arrays in 21 arrays",
        with_data(json.dumps({f"a{i}": [[]] * 999 for i in range(21)})),
        "more than 20000 values",
    ),
    ("a string just over the limit", with_data(json.dumps({"s": BIG_STRING})), "longer than 65536"),
    ("a key just over the limit", with_data(json.dumps({BIG_STRING: 1})), "longer than 65536"),
    ("a long escaped string", with_data(json.dumps({"s": "\n" * 65537})), "longer than 65536"),
    # not JSON at all
    ("raw control character", with_data('{"s": "a\x01b"}'), "Invalid control character"),
    ("raw newline in a string", with_data('{"s": "a\nb"}'), "Invalid control character"),
    ("NUL byte", with_data('{"s": "a\x00b"}'), "Invalid control character"),
    ("trailing garbage", body_of(event()) + b" garbage", "Extra data"),
    ("two documents", body_of(event()) + body_of(event()), "Extra data"),
    ("an unterminated string", b'{"specversion": "1.0", "id": "abc', "Unterminated string"),
    ("a truncated body", body_of(event())[:40], "not valid JSON"),
    ("single quotes", b"{'specversion': '1.0'}", "not valid JSON"),
    ("a trailing comma", b'{"specversion": "1.0",}', "not valid JSON"),
    ("a comment", b'{"specversion": "1.0"} // c', "not valid JSON"),
    ("a bad escape", with_data('{"s": "\\x41"}'), "Invalid \\escape"),
    ("not JSON", b"not json", "not valid JSON"),
    ("empty body", b"", "body is empty"),
    ("whitespace only", b" \n\t ", "body is empty"),
    # JSON, not an event
    ("null", b"null", "a JSON null, not an object"),
    ("a top-level array", b"[1, 2, 3]", "a JSON array, not an object"),
    ("a top-level number", b"42", "a JSON number, not an object"),
    ("a top-level string", b'"an event"', "a JSON string, not an object"),
    ("a top-level boolean", b"true", "a JSON boolean, not an object"),
    ("an empty object", b"{}", "specversion is missing"),
]


@pytest.mark.parametrize(
    ("body", "reason"), [(b, r) for _, b, r in HOSTILE], ids=[i for i, _, _ in HOSTILE]
)
def test_each_hostile_body_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode(body)
    assert reason in str(info.value)
    assert len(str(info.value)) < 400  # a sentence, not the body echoed back


def test_there_are_enough_hostile_bodies() -> None:
    assert len(HOSTILE) >= 25


# Wrong values at every attribute: (change to a valid event, error class, fragment of the reason).
BROKEN_ATTRIBUTES: list[tuple[dict[str, Any], type[PoisonMessage], str]] = [
    ({"specversion": None}, MalformedMessage, "specversion is missing"),
    ({"specversion": "0.3"}, MalformedMessage, "specversion must be '1.0', got '0.3'"),
    ({"specversion": "1.0.2"}, MalformedMessage, "specversion must be '1.0'"),
    ({"specversion": 1.0}, MalformedMessage, "specversion must be '1.0', got 1.0"),
    ({"specversion": ["1.0"]}, MalformedMessage, "specversion must be '1.0'"),
    ({"id": None}, MalformedMessage, "required attribute 'id' is missing"),
    ({"id": 42}, MalformedMessage, "'id' must be a non-empty string, got a JSON number"),
    ({"id": ""}, MalformedMessage, "'id' must be a non-empty string, got an empty string"),
    ({"id": ["x"]}, MalformedMessage, "got a JSON array"),
    ({"id": {"u": 1}}, MalformedMessage, "got a JSON object"),
    ({"id": "order-42"}, MalformedMessage, "is not a UUID: orderflow uses the event id"),
    ({"id": "1; DROP TABLE notes"}, MalformedMessage, "not a UUID"),
    ({"source": None}, MalformedMessage, "required attribute 'source' is missing"),
    ({"source": 7}, MalformedMessage, "'source' must be a non-empty string"),
    ({"source": "two words"}, MalformedMessage, "not a URI-reference"),
    ({"source": "1bad:scheme"}, MalformedMessage, "not a URI-reference"),
    ({"source": "/bad%zzescape"}, MalformedMessage, "not a URI-reference"),
    ({"source": "/ünïcode"}, MalformedMessage, "not a URI-reference"),
    ({"source": "s" * 600}, MalformedMessage, "longer than 512"),
    ({"type": None}, MalformedMessage, "required attribute 'type' is missing"),
    ({"type": True}, MalformedMessage, "'type' must be a non-empty string, got a JSON boolean"),
    ({"time": 1764158400}, MalformedMessage, "RFC 3339 timestamp string, got a JSON number"),
    ({"time": "yesterday"}, MalformedMessage, "not an RFC 3339 timestamp"),
    ({"time": "2026-11-26T12:00:00"}, MalformedMessage, "has no UTC offset"),
    ({"time": "2026-13-01T00:00:00Z"}, MalformedMessage, "not an RFC 3339 timestamp"),
    ({"time": "2026-11-26T12:00:00+24:00"}, MalformedMessage, "not an RFC 3339 timestamp"),
    ({"time": "2026-11-26"}, MalformedMessage, "not an RFC 3339 timestamp"),
    ({"time": "20261126T120000Z"}, MalformedMessage, "not an RFC 3339 timestamp"),
    (
        {"time": "\uff12\uff10\uff12\uff16-11-26T12:00:00Z"},
        MalformedMessage,
        "not an RFC 3339 timestamp",
    ),
    ({"subject": 5}, MalformedMessage, "'subject' must be a non-empty string"),
    ({"subject": ""}, MalformedMessage, "'subject' must be a non-empty string"),
    ({"datacontenttype": 5}, MalformedMessage, "'datacontenttype' must be a non-empty string"),
    ({"datacontenttype": "application/xml"}, UnsupportedContentType, "is not JSON"),
    ({"datacontenttype": "text/plain"}, UnsupportedContentType, "is not JSON"),
    ({"datacontenttype": "application/jsonx"}, UnsupportedContentType, "is not JSON"),
    ({"dataschema": 5}, MalformedMessage, "dataschema 5 is not an absolute URI"),
    ({"dataschema": ""}, MalformedMessage, "is not an absolute URI"),
    ({"dataschema": "schemas/charge.json"}, MalformedMessage, "is not an absolute URI"),
    ({"data": None}, MalformedMessage, "data is missing"),
    ({"data": [1]}, MalformedMessage, "data must be a JSON object"),
    ({"data": "text"}, MalformedMessage, "got a JSON string"),
    ({"data": 5}, MalformedMessage, "got a JSON number"),
    (
        {"data": None, "data_base64": "AAEC"},
        MalformedMessage,
        "data_base64 (binary data) is not supported",
    ),
    ({"data_base64": "AAEC"}, MalformedMessage, "data_base64 (binary data) is not supported"),
    ({"traceparent": 5}, MalformedMessage, "'traceparent' must be a non-empty string"),
    ({"correlationid": ""}, MalformedMessage, "'correlationid' must be a non-empty string"),
    ({"tracestate": "t" * 513}, MalformedMessage, "longer than 512"),
    ({"correlationid": "c\u0000d"}, MalformedMessage, "'correlationid' holds the character U+0000"),
    ({"subject": "order\x7f"}, MalformedMessage, "'subject' holds the character U+007F"),
    ({"type": "pay.charge.v1\n"}, MalformedMessage, "'type' holds the character U+000A"),
    ({"ext": "a\u0085b"}, MalformedMessage, "'ext' holds the character U+0085"),
    ({"ext": "\ufffe"}, MalformedMessage, "'ext' holds the character U+FFFE"),
    ({"ext": "\U0010ffff"}, MalformedMessage, "'ext' holds the character U+10FFFF"),
    (
        {"ext": [1]},
        MalformedMessage,
        "'ext' must be a string, an integer or a boolean, got a JSON array",
    ),
    ({"ext": {"a": 1}}, MalformedMessage, "got a JSON object"),
    ({"ext": 1.5}, MalformedMessage, "got a JSON number that is not an integer"),
    ({"ext": 2**31}, MalformedMessage, "out of the 32-bit range"),
    ({"ext": -(2**31) - 1}, MalformedMessage, "out of the 32-bit range"),
    ({"Upper": "x"}, MalformedMessage, "'Upper' is not a valid CloudEvents attribute name"),
    ({"with-dash": "x"}, MalformedMessage, "not a valid CloudEvents attribute name"),
    ({"under_score": "x"}, MalformedMessage, "not a valid CloudEvents attribute name"),
    ({"a" * 21: "x"}, MalformedMessage, "1 to 20 lower-case letters"),
    ({"": "x"}, MalformedMessage, "'' is not a valid CloudEvents attribute name"),
    ({"ünicode": "x"}, MalformedMessage, "not a valid CloudEvents attribute name"),
    ({"Data": {"a": 1}}, MalformedMessage, "'Data' is not a valid"),
    ({"ID": "5f0c6c55-2d8e-4a57-9f5e-1e6bb0b7b0a1"}, MalformedMessage, "'ID' is not a valid"),
]


@pytest.mark.parametrize(
    ("change", "error", "reason"),
    BROKEN_ATTRIBUTES,
    ids=[repr(change)[:60] for change, _, _ in BROKEN_ATTRIBUTES],
)
def test_each_wrong_attribute_is_refused_with_its_reason(
    change: dict[str, Any], error: type[PoisonMessage], reason: str
) -> None:
    doc = {k: v for k, v in event(**change).items() if v is not None}
    with pytest.raises(error) as info:
        decode(body_of(doc))
    assert type(info.value) is error
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "application/cloudevents-batch+json",
        "application/cloudevents+json; charset=latin-1",
        'application/cloudevents+json; charset="utf-16"',
    ],
)
def test_a_foreign_content_type_is_refused(content_type: str) -> None:
    with pytest.raises(UnsupportedContentType):
        decode(body_of(event()), content_type=content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/cloudevents+json",
        "Application/CloudEvents+JSON",
        "application/cloudevents+json;charset=UTF-8",
        'application/cloudevents+json; charset="utf-8"',
    ],
)
def test_structured_content_types_are_read(content_type: str | None) -> None:
    assert decode(body_of(event()), content_type=content_type).type == "pay.charge.v1"


# --- each guard refuses what plain json.loads accepts ------------------------------------------

GUARDED: list[tuple[str, bytes, str]] = [
    ("depth", nested_arrays(LIMIT.max_depth + 1).encode(), "nests deeper"),
    ("keys", json.dumps({f"k{i}": 0 for i in range(257)}).encode(), "more than 256 keys"),
    ("items", json.dumps([0] * 1001).encode(), "more than 1000 items"),
    ("total values", json.dumps([[0] * 999] * 21).encode(), "more than 20000 values"),
    ("string length", json.dumps(BIG_STRING).encode(), "longer than 65536"),
    ("number length", b"1" + b"0" * 40, "41 characters long"),
    ("float overflow", b"1e400", "too large for a float"),
    ("NaN", b"NaN", "NaN is not a JSON number"),
    ("Infinity", b"[Infinity]", "Infinity is not"),
    ("-Infinity", b"[-Infinity]", "-Infinity is not"),
    ("duplicate keys", b'{"a": 1, "a": 2}', "more than once"),
    ("lone surrogate escape", b'["\\ud800"]', "unpaired surrogate"),
    ("UTF-8 BOM", b"\xef\xbb\xbf{}", "byte order mark"),
    ("UTF-16", '{"a": 1}'.encode("utf-16"), "UTF-16"),
    ("UTF-8-encoded surrogate", b'"\xed\xa0\x80"', "not valid UTF-8"),
]


@pytest.mark.parametrize(
    ("body", "reason"), [(b, r) for _, b, r in GUARDED], ids=[i for i, _, _ in GUARDED]
)
def test_each_guard_refuses_a_body_plain_json_accepts(body: bytes, reason: str) -> None:
    json.loads(body)  # the standard library reads it without complaint
    with pytest.raises(MalformedMessage) as info:
        safe_json.loads(body)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b, r) for _, b, r in GUARDED[:5]]
    + [(nested_arrays(2000).encode(), "nests deeper"), (b"[" * 100_000, "more than 20000 values")],
)
def test_size_limits_are_checked_before_json_builds_anything(
    monkeypatch: pytest.MonkeyPatch, body: bytes, reason: str
) -> None:
    def no_decoder(limits: JsonLimits) -> Any:
        raise AssertionError("the decoder was reached")

    monkeypatch.setattr(safe_json, "_decoder", no_decoder)
    with pytest.raises(MalformedMessage) as info:
        safe_json.loads(body)
    assert reason in str(info.value)


def test_a_recursion_error_from_json_becomes_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def decode(self, text: str) -> Any:
            raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(safe_json, "_decoder", lambda limits: Exploding())
    with pytest.raises(MalformedMessage, match="RecursionError"):
        safe_json.loads(b"[1]")


@pytest.mark.parametrize(
    "error", [KeyError("id"), TypeError("bad"), RecursionError(), MemoryError()]
)
def test_any_other_exception_while_decoding_becomes_malformed(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def explode(body: bytes, *, limits: JsonLimits) -> Any:
        raise error

    monkeypatch.setattr(codec.safe_json, "loads", explode)
    with pytest.raises(MalformedMessage, match=type(error).__name__) as info:
        decode(body_of(event()))
    assert info.value.__cause__ is error


def test_a_body_that_is_not_bytes_becomes_malformed() -> None:
    with pytest.raises(PoisonMessage):
        codec.decode(12345, content_type=None, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
