"""The CloudEvents 1.0 envelope every orderflow message travels in.

Structured mode, JSON: one document with the context attributes and ``data``. ``id`` is a UUID and
is the idempotency key; ``type`` equals the AMQP routing key; ``subject`` is the order id.
Extensions: ``correlationid``, ``causationid``, ``traceparent``, ``tracestate``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SPECVERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One CloudEvent. ``data`` is plain JSON (already validated against its type, or raw)."""

    id: str
    source: str
    type: str
    time: datetime
    data: dict[str, Any]
    subject: str | None = None
    datacontenttype: str = DATA_CONTENT_TYPE
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    def with_trace(self, traceparent: str | None, tracestate: str | None) -> Envelope:
        """The same event carrying another trace context."""
        return Envelope(
            id=self.id,
            source=self.source,
            type=self.type,
            time=self.time,
            data=self.data,
            subject=self.subject,
            datacontenttype=self.datacontenttype,
            correlationid=self.correlationid,
            causationid=self.causationid,
            traceparent=traceparent,
            tracestate=tracestate,
            extensions=self.extensions,
        )


def new_message_id() -> str:
    """A fresh idempotency key."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)
