"""The OpenTelemetry messaging attributes of every span that sends or handles a message, named by
the semantic-convention constants, and the W3C trace headers of a span, written by the
propagator (never formatted by hand)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import messaging_attributes as semconv
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["process_attributes", "send_attributes", "set_message_id", "trace_headers_of"]

_PROPAGATOR = TraceContextTextMapPropagator()
_RABBITMQ = semconv.MessagingSystemValues.RABBITMQ.value


def send_attributes(
    *, exchange: str, routing_key: str, message_id: str | None = None, publish: bool = False
) -> dict[str, Any]:
    """A producer span's attributes; ``publish``: it publishes to the broker itself (the relay),
    rather than handing the message to the outbox or a client library."""
    attributes: dict[str, Any] = {
        semconv.MESSAGING_SYSTEM: _RABBITMQ,
        semconv.MESSAGING_OPERATION_TYPE: semconv.MessagingOperationTypeValues.SEND.value,
        semconv.MESSAGING_DESTINATION_NAME: exchange,
        semconv.MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY: routing_key,
    }
    if publish:
        attributes[semconv.MESSAGING_OPERATION_NAME] = "publish"
    if message_id is not None:
        attributes[semconv.MESSAGING_MESSAGE_ID] = message_id
    return attributes


def process_attributes(
    *, exchange: str, routing_key: str, message_id: str, queue: str
) -> dict[str, Any]:
    """A consumer span's attributes (the queue is the consumer group)."""
    return {
        semconv.MESSAGING_SYSTEM: _RABBITMQ,
        semconv.MESSAGING_OPERATION_TYPE: semconv.MessagingOperationTypeValues.PROCESS.value,
        semconv.MESSAGING_DESTINATION_NAME: exchange,
        semconv.MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY: routing_key,
        semconv.MESSAGING_MESSAGE_ID: message_id,
        semconv.MESSAGING_CONSUMER_GROUP_NAME: queue,
    }


def set_message_id(span: Span, message_id: str) -> None:
    span.set_attribute(semconv.MESSAGING_MESSAGE_ID, message_id)


def trace_headers_of(span: Span) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``span`` as the parent, for message headers;
    empty when the span is not recording."""
    carrier: dict[str, str] = {}
    if span.is_recording():
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier
