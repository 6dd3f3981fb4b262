"""Messaging span attributes by the semantic conventions; trace headers by the propagator."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext

from libs.observability.messaging import process_attributes, send_attributes, trace_headers_of
from libs.observability.tracing import context_from_headers


def test_a_span_s_trace_headers_name_it_as_the_parent() -> None:
    span = TracerProvider().get_tracer("t").start_span("publish x")
    headers = trace_headers_of(span)
    ctx = span.get_span_context()
    assert (
        headers["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    )
    parent = context_from_headers(headers)
    assert parent is not None
    span.end()
    idle = NonRecordingSpan(SpanContext(trace_id=1, span_id=2, is_remote=False))
    assert trace_headers_of(idle) == {}


def test_send_and_process_attributes_follow_the_conventions() -> None:
    sent = send_attributes(exchange="order.events", routing_key="order.x.v1", publish=True)
    assert sent == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "order.events",
        "messaging.rabbitmq.destination.routing_key": "order.x.v1",
    }
    handled = process_attributes(exchange="e", routing_key="r", message_id="m", queue="q")
    assert handled["messaging.operation.type"] == "process"
    assert handled["messaging.consumer.group.name"] == "q"
    assert handled["messaging.message.id"] == "m"
