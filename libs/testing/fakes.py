"""In-memory stand-ins for the broker side of the consumer runner, for fast tests of handlers.

:class:`FakeDelivery` is a delivery as the runner sees it (body, properties, ack/nack) and
:class:`RecordingDeadLetters` records what would have gone to a dead-letter queue. With them a
test drives :class:`~libs.service.runner.MessageRunner` against a real database and no broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class FakeDelivery:
    body: bytes
    content_type: str | None = "application/cloudevents+json"
    content_encoding: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    exchange: str | None = "test"
    routing_key: str | None = "test"
    correlation_id: str | None = None
    timestamp: datetime | None = None
    redelivered: bool = False
    settled: list[str] = field(default_factory=list)

    @property
    def processed(self) -> bool:
        return bool(self.settled)

    async def ack(self, multiple: bool = False) -> None:
        self.settled.append("ack-multiple" if multiple else "ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("requeue" if requeue else "reject")


@dataclass
class RecordingDeadLetters:
    letters: list[tuple[FakeDelivery, str, BaseException, int]] = field(default_factory=list)

    async def dead_letter(
        self, delivery: Any, *, queue: str, error: BaseException, attempts: int
    ) -> None:
        self.letters.append((delivery, queue, error, attempts))
