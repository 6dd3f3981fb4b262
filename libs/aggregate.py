"""Aggregates that record their own domain events (as Spring Data's ``AbstractAggregateRoot``).

A domain method changes state and calls :meth:`AggregateRoot.record`; the unit of work (the
consumer's :class:`~libs.service.runner.HandlerContext`) pulls the recorded events of every
aggregate it saved and writes them to the outbox in the same transaction. Handlers never publish.
"""

from __future__ import annotations

from libs.messages.registry import Message

__all__ = [
    "AggregateRoot",
]


class AggregateRoot:
    """Mixin for a domain aggregate; ``aggregate_type`` names it in the outbox."""

    aggregate_type: str = "aggregate"

    def record(self, event: Message) -> None:
        self.__dict__.setdefault("_recorded", []).append(event)

    def pull_events(self) -> list[Message]:
        """The events recorded since the last pull, oldest first; clears them."""
        events: list[Message] = self.__dict__.pop("_recorded", [])
        return events

    @property
    def aggregate_id(self) -> str:
        raise NotImplementedError
