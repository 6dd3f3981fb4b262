"""OpenTelemetry setup and W3C trace-context propagation through messages.

Configured by the standard ``OTEL_*`` variables: ``OTEL_SDK_DISABLED=true`` turns tracing off;
spans are exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific
variable) is set, over HTTP/protobuf unless ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``) says ``grpc``. Without an endpoint spans are still created, so trace ids reach the logs and the
messages, but nothing is exported. ``setup_tracing`` is called once, by a composition root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_configured: dict[str, Any] = {}


def setup_tracing(service_name: str) -> None:
    """Install the tracer provider for this process (idempotent)."""
    if _configured or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        exporter: Any
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            exporter = HttpExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured["provider"] = provider


def shutdown_tracing() -> None:
    """Flush and stop exporting (call at process exit)."""
    provider = _configured.pop("provider", None)
    if provider is not None:
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_trace_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the current span, empty when there is none."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


_MAX_TRACE_HEADER = 512  # W3C: traceparent is 55 characters, tracestate at most 32 members


def context_from_headers(headers: Mapping[str, Any] | None) -> Context | None:
    """The remote context in message headers; None when absent or malformed.

    Headers come from strangers: bytes that are not UTF-8, values of any type or size, a
    propagator that raises — all mean "no remote context", never an exception.
    """
    try:
        carrier: dict[str, str] = {}
        for key in ("traceparent", "tracestate"):
            value = (headers or {}).get(key)
            if isinstance(value, bytes):
                value = value.decode("ascii")
            if isinstance(value, str) and len(value) <= _MAX_TRACE_HEADER:
                carrier[key] = value
        if "traceparent" not in carrier:
            return None
        ctx = _PROPAGATOR.extract(carrier)
        span_context = trace.get_current_span(ctx).get_span_context()
        return ctx if span_context.is_valid else None
    except Exception:
        return None


def ids_of_current_span() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, for log lines."""
    span_context = trace.get_current_span(otel_context.get_current()).get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
