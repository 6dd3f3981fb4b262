"""Logs (structlog, JSON, trace ids in every line) and traces (OpenTelemetry, OTLP)."""

from libs.observability.logging import get_logger, setup_logging
from libs.observability.tracing import setup_tracing, shutdown_tracing, tracer

__all__ = ["get_logger", "setup_logging", "setup_tracing", "shutdown_tracing", "tracer"]
