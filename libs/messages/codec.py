"""Encode and decode CloudEvents 1.0 structured JSON.

``decode`` reads every event that is valid in structured mode under CloudEvents 1.0 and its JSON
format, and that orderflow can process. It checks, in order: size, content type, JSON (through
:mod:`libs.messages.safe_json`, which bounds what parsing may cost), ``specversion``, attribute
names, the context attributes and their types, then ``data``. Anything wrong raises a
:class:`~libs.errors.PoisonMessage` subclass whose text says what is wrong, so the consumer can
dead-letter the body with a reason. Any other exception, a bug included, becomes
:class:`~libs.errors.MalformedMessage`: no body can make ``decode`` raise anything else, and it
never returns a half-read event.

What the spec allows and orderflow reads:

* ``time``, ``subject``, ``datacontenttype`` and ``dataschema`` are optional. An event without
  ``time`` gets the time it was decoded at (``Envelope.time`` is never ``None``).
* Extension attributes: names of 1 to 20 lower-case ASCII letters and digits; values that are a
  string, an integer (32-bit, as the spec's Integer) or a boolean. As the spec says of every
  String attribute, no control character (U+0000-U+001F, U+007F-U+009F) nor noncharacter. They are kept in
  ``Envelope.extensions``, and so is ``dataschema``, which the envelope has no field for;
  ``encode`` writes them back. A JSON ``null`` means the attribute is absent.
* ``datacontenttype`` may be any JSON media type: ``application/json``, ``text/json``, or one with
  a ``+json`` suffix, parameters allowed.

What orderflow asks beyond the spec, and says so when it refuses an event:

* ``id`` is the idempotency key, so it must be a UUID (the spec allows any non-empty string).
* Message types carry a JSON object: ``data`` must be one, and ``data_base64`` (binary data) is
  refused.

What ``encode`` sends is unchanged: every attribute it writes is spec-valid.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from libs.errors import MalformedMessage, MessageTooLarge, PoisonMessage, UnsupportedContentType
from libs.messages import safe_json
from libs.messages.envelope import (
    CONTENT_TYPE,
    DATA_CONTENT_TYPE,
    SPECVERSION,
    Envelope,
    utcnow,
)
from libs.messages.safe_json import DEFAULT_LIMITS, JsonLimits

_EXTENSIONS = ("correlationid", "causationid", "traceparent", "tracestate")
# Attributes with a field of their own in Envelope, all strings; checked in this order.
_STRING_ATTRIBUTES = ("id", "source", "type", "subject", "datacontenttype", *_EXTENSIONS)
_KNOWN = frozenset(("specversion", "time", *_STRING_ATTRIBUTES))
# Members of the JSON envelope that are not context attributes.
_DATA_MEMBERS = frozenset(("data", "data_base64"))
MAX_ATTRIBUTE_CHARS = 512
MAX_ATTRIBUTE_NAME_CHARS = 20
_ATTRIBUTE_NAME = re.compile(rf"[a-z0-9]{{1,{MAX_ATTRIBUTE_NAME_CHARS}}}")
_INT32 = range(-(2**31), 2**31)
# Characters CloudEvents 1.0 does not allow in a String: control characters and noncharacters
# (surrogates cannot get this far: safe_json refuses them).
_FORBIDDEN_CHAR = re.compile(
    "[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)

# RFC 3986: the characters a URI may hold, a percent sign only as the start of an escape.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]++|%[0-9A-Fa-f]{2})++")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*+")
# RFC 3339 date-time ('T' and 'Z' in either case, as its ABNF allows); the offset is matched as
# optional only to tell "no offset" apart from "not a timestamp at all".
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)
# application/json, text/json, and any media type with a +json suffix.
_JSON_MEDIA_TYPE = re.compile(r"(?:application|text)/(?:[a-z0-9!#$&^_.+\-]+\+)?json")
_MAX_SHOWN_CHARS = 80


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


def decode(
    body: bytes,
    *,
    content_type: str | None,
    max_bytes: int,
    limits: JsonLimits = DEFAULT_LIMITS,
) -> Envelope:
    """Read one event, or raise the reason it cannot be read: always a ``PoisonMessage``."""
    try:
        return _decode(body, content_type=content_type, max_bytes=max_bytes, limits=limits)
    except PoisonMessage:
        raise
    except Exception as exc:  # a bug must not stall the consumer: the body is dead-lettered
        reason = f"{type(exc).__name__}: {exc}"[:200]
        raise MalformedMessage(f"body could not be decoded as a CloudEvent ({reason})") from exc


def _decode(
    body: bytes, *, content_type: str | None, max_bytes: int, limits: JsonLimits
) -> Envelope:
    if len(body) > max_bytes:
        raise MessageTooLarge(f"body is {len(body)} bytes; the limit is {max_bytes}")
    _check_content_type(content_type)
    doc = safe_json.loads(body, limits=limits)
    if not isinstance(doc, dict):
        raise MalformedMessage(
            f"body is a JSON {_kind(doc)}, not an object: a structured CloudEvent is a JSON object"
        )
    specversion = doc.get("specversion")
    if specversion is None:
        raise MalformedMessage(f"specversion is missing; it must be {SPECVERSION!r}")
    if specversion != SPECVERSION:
        raise MalformedMessage(f"specversion must be {SPECVERSION!r}, got {_show(specversion)}")
    for name in doc:
        if name not in _DATA_MEMBERS and not _ATTRIBUTE_NAME.fullmatch(name):
            raise MalformedMessage(
                f"{_show(name)} is not a valid CloudEvents attribute name: names are 1 to "
                f"{MAX_ATTRIBUTE_NAME_CHARS} lower-case letters (a-z) and digits (0-9)"
            )
    if doc.get("data_base64") is not None:
        raise MalformedMessage(
            "data_base64 (binary data) is not supported: orderflow messages carry a JSON object "
            "in data"
        )

    attrs = {name: _string_attribute(doc, name) for name in _STRING_ATTRIBUTES}
    message_id, source, type_ = attrs["id"], attrs["source"], attrs["type"]
    if message_id is None or source is None or type_ is None:
        missing = next(n for n in ("id", "source", "type") if attrs[n] is None)
        raise MalformedMessage(f"required attribute {missing!r} is missing")
    try:
        uuid.UUID(message_id)
    except ValueError:
        raise MalformedMessage(
            f"id {_show(message_id)} is not a UUID: orderflow uses the event id as its "
            "idempotency key and requires a UUID"
        ) from None
    if not _is_uri_reference(source):
        raise MalformedMessage(f"source {_show(source)} is not a URI-reference (RFC 3986)")
    datacontenttype = attrs["datacontenttype"] or DATA_CONTENT_TYPE
    if not _JSON_MEDIA_TYPE.fullmatch(datacontenttype.partition(";")[0].strip().lower()):
        raise UnsupportedContentType(
            f"datacontenttype {_show(datacontenttype)} is not JSON: orderflow messages carry a "
            "JSON object in data"
        )
    data = doc.get("data")
    if data is None:
        raise MalformedMessage("data is missing: orderflow messages carry a JSON object in data")
    if not isinstance(data, dict):
        raise MalformedMessage(
            f"data must be a JSON object (orderflow message types are objects), got a JSON "
            f"{_kind(data)}"
        )
    return Envelope(
        id=message_id,
        source=source,
        type=type_,
        time=_time(doc.get("time")),
        data=data,
        subject=attrs["subject"],
        datacontenttype=datacontenttype,
        correlationid=attrs["correlationid"],
        causationid=attrs["causationid"],
        traceparent=attrs["traceparent"],
        tracestate=attrs["tracestate"],
        extensions=_extensions(doc),
    )


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != CONTENT_TYPE:
        raise UnsupportedContentType(
            f"content type {_show(content_type)} is not {CONTENT_TYPE!r} "
            "(structured CloudEvents JSON)"
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedContentType(
                f"content type {_show(content_type)} declares another charset than UTF-8"
            )


def _string_attribute(doc: dict[str, Any], name: str) -> str | None:
    """The attribute's value; ``None`` when absent or JSON null (the JSON format's "unset")."""
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else f"a JSON {_kind(value)}"
        raise MalformedMessage(f"attribute {name!r} must be a non-empty string, got {got}")
    if len(value) > MAX_ATTRIBUTE_CHARS:
        raise MalformedMessage(
            f"attribute {name!r} is longer than {MAX_ATTRIBUTE_CHARS} characters"
        )
    _check_characters(name, value)
    return value


def _check_characters(name: str, value: str) -> None:
    if value.isprintable():  # every forbidden character is unprintable: the usual case is cheap
        return
    forbidden = _FORBIDDEN_CHAR.search(value)
    if forbidden is not None:
        raise MalformedMessage(
            f"attribute {name!r} holds the character U+{ord(forbidden.group()):04X}; CloudEvents "
            "does not allow control characters or noncharacters in attribute values"
        )


def _time(value: Any) -> datetime:
    """RFC 3339 ``time``, or the time of decoding when the event has none (it is optional)."""
    if value is None:
        return utcnow()
    if not isinstance(value, str):
        raise MalformedMessage(
            f"time must be an RFC 3339 timestamp string, got a JSON {_kind(value)}"
        )
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise MalformedMessage(f"time {_show(value)} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu is None and sign is None:
        raise MalformedMessage(
            f"time {_show(value)} has no UTC offset: RFC 3339 requires 'Z' or '+hh:mm'"
        )
    try:
        if zulu is not None or (int(off_h) == 0 and int(off_m) == 0):
            tz: timezone = UTC
        else:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # RFC 3339 allows a leap second (60); datetime does not
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:  # month 13, hour 25, an offset of a day or more...
        raise MalformedMessage(f"time {_show(value)} is not an RFC 3339 timestamp") from None


def _extensions(doc: dict[str, Any]) -> dict[str, Any]:
    """Attributes the envelope has no field for: ``dataschema`` and extension attributes."""
    extensions: dict[str, Any] = {}
    for name, value in doc.items():
        if name in _KNOWN or name in _DATA_MEMBERS or value is None:
            continue
        if name == "dataschema":
            if (
                not isinstance(value, str)
                or not value
                or not _is_uri_reference(value, absolute=True)
            ):
                raise MalformedMessage(f"dataschema {_show(value)} is not an absolute URI")
        elif isinstance(value, str):
            _check_characters(name, value)
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if value not in _INT32:
                raise MalformedMessage(
                    f"extension attribute {name!r} is an integer out of the 32-bit range "
                    "CloudEvents allows"
                )
        else:
            got = "number that is not an integer" if isinstance(value, float) else _kind(value)
            raise MalformedMessage(
                f"extension attribute {name!r} must be a string, an integer or a boolean, "
                f"got a JSON {got}"
            )
        extensions[name] = value
    return extensions


def _is_uri_reference(value: str, *, absolute: bool = False) -> bool:
    """Whether ``value`` is an RFC 3986 URI-reference (with ``absolute``, a URI with a scheme)."""
    if not _URI_CHARS.fullmatch(value):
        return False
    head = re.split(r"[/?#]", value, maxsplit=1)[0]
    if ":" in head:  # a scheme; a relative reference's first segment cannot hold a colon
        return _SCHEME.fullmatch(head.partition(":")[0]) is not None
    return not absolute


def _kind(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value: Any) -> str:
    """``repr`` of a value from the body, cut short: error texts must stay small."""
    shown = repr(value)
    return shown if len(shown) <= _MAX_SHOWN_CHARS else shown[: _MAX_SHOWN_CHARS - 3] + "..."
