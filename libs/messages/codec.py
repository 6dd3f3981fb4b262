"""Encode and decode CloudEvents 1.0 structured JSON.

``decode`` checks, in order: size, content type, JSON, the required context attributes and their
types. Anything wrong raises a :class:`~libs.errors.PoisonMessage` subclass whose text says what is
wrong, so the consumer can dead-letter the body with a reason. It never returns a half-read event.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from libs.errors import MalformedMessage, MessageTooLarge, UnsupportedContentType
from libs.messages.envelope import CONTENT_TYPE, DATA_CONTENT_TYPE, SPECVERSION, Envelope

ACCEPTED_CONTENT_TYPES = frozenset({CONTENT_TYPE, "application/cloudevents+json; charset=utf-8"})
_CORE = ("id", "source", "type", "time", "subject", "datacontenttype")
_EXTENSIONS = ("correlationid", "causationid", "traceparent", "tracestate")
_KNOWN = frozenset(("specversion", "data", *_CORE, *_EXTENSIONS))
MAX_ATTRIBUTE_CHARS = 512


def encode(envelope: Envelope) -> bytes:
    """The event as compact UTF-8 JSON; ``None`` attributes are left out."""
    doc: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
        "time": envelope.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": envelope.datacontenttype,
    }
    for name in ("subject", *_EXTENSIONS):
        value = getattr(envelope, name)
        if value is not None:
            doc[name] = value
    doc.update(envelope.extensions)
    doc["data"] = envelope.data
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode(body: bytes, *, content_type: str | None, max_bytes: int) -> Envelope:
    """Read one event, or raise the reason it cannot be read."""
    if len(body) > max_bytes:
        raise MessageTooLarge(f"body is {len(body)} bytes; the limit is {max_bytes}")
    if content_type is not None and content_type.lower() not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedContentType(
            f"content type {content_type!r} is not {CONTENT_TYPE!r} (structured CloudEvents JSON)"
        )
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedMessage(f"body is a JSON {type(doc).__name__}, not an object")
    if doc.get("specversion") != SPECVERSION:
        raise MalformedMessage(
            f"specversion must be {SPECVERSION!r}, got {doc.get('specversion')!r}"
        )
    attrs = {name: _string_attribute(doc, name) for name in (*_CORE, *_EXTENSIONS)}
    for required in ("id", "source", "type", "time"):
        if attrs[required] is None:
            raise MalformedMessage(f"required attribute {required!r} is missing")
    message_id = str(attrs["id"])
    try:
        uuid.UUID(message_id)
    except ValueError:
        raise MalformedMessage(f"id {message_id!r} is not a UUID") from None
    try:
        time = datetime.fromisoformat(str(attrs["time"]).replace("Z", "+00:00"))
    except ValueError:
        raise MalformedMessage(f"time {attrs['time']!r} is not an RFC 3339 timestamp") from None
    if time.tzinfo is None:
        raise MalformedMessage("time has no UTC offset")
    datacontenttype = attrs["datacontenttype"] or DATA_CONTENT_TYPE
    if datacontenttype != DATA_CONTENT_TYPE:
        raise UnsupportedContentType(f"datacontenttype {datacontenttype!r} is not JSON")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MalformedMessage("data must be a JSON object")
    return Envelope(
        id=message_id,
        source=str(attrs["source"]),
        type=str(attrs["type"]),
        time=time,
        data=data,
        subject=attrs["subject"],
        datacontenttype=datacontenttype,
        correlationid=attrs["correlationid"],
        causationid=attrs["causationid"],
        traceparent=attrs["traceparent"],
        tracestate=attrs["tracestate"],
        extensions={k: v for k, v in doc.items() if k not in _KNOWN},
    )


def _string_attribute(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"attribute {name!r} must be a non-empty string")
    if len(value) > MAX_ATTRIBUTE_CHARS:
        raise MalformedMessage(
            f"attribute {name!r} is longer than {MAX_ATTRIBUTE_CHARS} characters"
        )
    return value
