"""What a handler is given: its transaction's connection, the message's envelope and its outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.aggregate import AggregateRoot
from libs.errors import PoisonMessage
from libs.messages.envelope import Envelope
from libs.messages.registry import Message, MessageRegistry
from libs.outbox.store import OutboxWriter
from libs.pg.pool import Conn

__all__ = ["Handler", "HandlerContext", "Preparer", "Refuser"]


@dataclass(slots=True)
class HandlerContext:
    """What a handler may touch: its transaction's connection and its outbox."""

    conn: Conn
    envelope: Envelope
    registry: MessageRegistry
    source: str
    outbox: OutboxWriter = field(default_factory=OutboxWriter)
    aggregates: list[AggregateRoot] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    """What the handlers of one transaction share: rows a :data:`Preparer` loaded for the whole
    batch at once (locked in the transaction, so no one else changes them meanwhile)."""

    def collect(self, aggregate: AggregateRoot) -> None:
        """Track an aggregate: its recorded events go to the outbox when the handler returns."""
        if aggregate not in self.aggregates:
            self.aggregates.append(aggregate)

    def write_collected(self) -> None:
        for aggregate in self.aggregates:
            for event in aggregate.pull_events():
                self.send(
                    event,
                    aggregate_type=aggregate.aggregate_type,
                    aggregate_id=aggregate.aggregate_id,
                    subject=aggregate.aggregate_id,
                )

    def send(
        self,
        message: Message,
        *,
        aggregate_type: str,
        aggregate_id: str,
        subject: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue a command or event in the outbox, caused by the message being handled."""
        spec = self.registry.spec_of(message)
        envelope = self.registry.envelope(
            message,
            source=self.source,
            subject=subject if subject is not None else self.envelope.subject,
            correlation_id=self.envelope.correlationid or self.envelope.id,
            causation_id=self.envelope.id,
            message_id=message_id,
        )
        self.outbox.add(
            envelope,
            exchange=spec.exchange,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
        )
        return envelope.id


Handler = Callable[[Any, HandlerContext], Awaitable[None]]
Preparer = Callable[[Conn, Sequence[tuple[Envelope, Any]], dict[str, Any]], Awaitable[None]]
"""Called once per transaction, before its handlers, with the (envelope, message) of each fresh
message: loads what they all need in one round trip into the shared dict."""
Refuser = Callable[[Envelope, PoisonMessage, HandlerContext], Awaitable[bool]]
"""Answers a message whose data its type refuses; True once answered, False to dead-letter."""
