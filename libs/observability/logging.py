"""structlog configuration: JSON lines (or a console format) with trace and service context.

Every line carries ``service``; lines written inside a span carry ``trace_id`` and ``span_id``.
Values bound with ``structlog.contextvars`` (order id, message id) appear on every line of the
task that bound them. CR and LF in any value are escaped, so input cannot forge log lines.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

from libs.observability.tracing import ids_of_current_span


def _add_trace(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ids = ids_of_current_span()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\r", "\\r").replace("\n", "\\n")
    return value


def _escape_newlines(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        event[key] = _escape(value)
    return event


def _format_exc_info(
    logger: Any, name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog's exception formatting, which must never raise: logging an error must not
    become one. (CPython 3.11 can fail with SystemError while computing the column markers of a
    traceback at some stack depths.) The fallback lists the frames without those markers."""
    try:
        return structlog.processors.format_exc_info(logger, name, event)
    except Exception:
        exc_info = event.pop("exc_info", None)
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if not isinstance(exc_info, tuple) or exc_info[1] is None:
            return event
        frames = [
            f'  File "{f.filename}", line {f.lineno}, in {f.name}\n    {(f.line or "").strip()}'
            for f in traceback.extract_tb(exc_info[2])
        ]
        event["exception"] = "\n".join(
            [
                "Traceback (most recent call last):",
                *frames,
                f"{exc_info[0].__name__}: {exc_info[1]}",
            ]
        )
        return event


def setup_logging(*, service: str, fmt: str = "json", level: str = "INFO") -> None:
    """Configure structlog and the standard library's root logger for this process."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace,
    ]
    shared.append(_escape_newlines)
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, _format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries log through the standard library (aio-pika's reconnects, asyncpg): same format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
