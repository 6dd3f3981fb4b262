"""What the runner keeps about each delivery on its way, and what it counts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span, SpanKind

from libs.messages.envelope import Envelope
from libs.messages.registry import Message
from libs.messaging.consumer import Delivery
from libs.observability.messaging import process_attributes
from libs.observability.metrics import ERROR, METRICS, OUTCOME, QUEUE, TYPE
from libs.observability.tracing import context_from_headers, tracer
from libs.service.context import Handler

__all__ = ["RunnerStats", "Work", "db_span", "record"]

_tracer = tracer("orderflow.consumer")


@dataclass(slots=True)
class RunnerStats:
    """What the runner did, counted as it happens (not read back from its log)."""

    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    requeued: int = 0


@dataclass(slots=True, eq=False)
class Work:
    """One delivery on its way: its span, what reading it gave, and how it is to be settled."""

    delivery: Delivery
    span: Span
    envelope: Envelope | None = None
    message: Message | None = None
    handler: Handler | None = None
    error: BaseException | None = None  # to be dead-lettered with
    attempts: int = 0
    requeue: bool = False  # settle by returning it to the queue
    duplicate: bool = False  # its inbox row was there already: committed nothing
    committed: bool = False  # its handler's work is committed (not yet acked)
    outbox_rows: int = 0  # the outbox rows its handler wrote

    @classmethod
    def start(cls, delivery: Delivery, queue: str) -> Work:
        """A delivery's work, its CONSUMER span started (a child of the sender's span)."""
        span = _tracer.start_span(
            f"process {delivery.routing_key or queue}",
            context=context_from_headers(delivery.headers or {}),
            kind=SpanKind.CONSUMER,
            attributes=process_attributes(
                exchange=delivery.exchange or "",
                routing_key=delivery.routing_key or "",
                message_id=delivery.message_id or "",
                queue=queue,
            ),
        )
        return cls(delivery, span)

    @property
    def key(self) -> str:
        """The inbox key: the event id in the form PostgreSQL prints a uuid in."""
        assert self.envelope is not None
        return str(uuid.UUID(self.envelope.id))


def db_span(work: Work, *, batched: bool) -> Any:
    """The CLIENT span of a message's database work: its whole transaction when alone, its
    handler's share of the batch's transaction when batched."""
    return _tracer.start_as_current_span(
        "postgresql transaction",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.operation.name": "TRANSACTION",
            "orderflow.handler": getattr(work.handler, "__qualname__", repr(work.handler)),
            "orderflow.batched": batched,
        },
    )


def record(
    works: list[Work], *, queue: str, kind_of: Callable[[Envelope | None], str], elapsed: float
) -> None:
    """A settled batch's metrics: its size, and per delivery its outcome and handling time."""
    where = {QUEUE: queue}
    METRICS.batch_size.record(len(works), where)
    for work in works:
        if work.requeue:
            outcome = {OUTCOME: "requeued"}
        elif work.error is not None:
            outcome = {OUTCOME: "dead_lettered", ERROR: type(work.error).__name__}
        else:
            outcome = {OUTCOME: "duplicate" if work.duplicate else "processed"}
        kind = kind_of(work.envelope)
        METRICS.consumed.add(1, {**where, TYPE: kind, **outcome})
        METRICS.process_duration.record(elapsed, {**where, TYPE: kind})
