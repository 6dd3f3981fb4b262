"""A saga instance's state and the inputs and outputs of its transitions (all immutable).

:mod:`libs.saga.engine` computes transitions from them; :mod:`libs.saga.store` persists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from libs.messages.registry import Command, Message

__all__ = [
    "TERMINAL",
    "Awaiting",
    "DeadlinePassed",
    "Input",
    "LogEntry",
    "OperatorCompensate",
    "OperatorRetry",
    "Reply",
    "SagaState",
    "Send",
    "Status",
    "Transition",
]


class Status(StrEnum):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"


TERMINAL = frozenset({Status.COMPLETED, Status.COMPENSATED})


@dataclass(frozen=True, slots=True)
class Awaiting:
    """A command sent and the reply types that settle it."""

    kind: str  # "action" | "compensation" | "failure"
    step: str
    replies: tuple[str, ...]
    message_id: str


@dataclass(frozen=True, slots=True)
class SagaState:
    id: str
    status: Status
    data: dict[str, Any]
    step: str | None = None
    attempt: int = 0
    done: tuple[str, ...] = ()
    awaiting: tuple[Awaiting, ...] = ()
    deadline_at: datetime | None = None
    reason: str | None = None
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "data": self.data,
            "step": self.step,
            "attempt": self.attempt,
            "done": list(self.done),
            "awaiting": [
                {
                    "kind": a.kind,
                    "step": a.step,
                    "replies": list(a.replies),
                    "message_id": a.message_id,
                }
                for a in self.awaiting
            ],
            "deadline_at": self.deadline_at.isoformat() if self.deadline_at else None,
            "reason": self.reason,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SagaState:
        return cls(
            id=doc["id"],
            status=Status(doc["status"]),
            data=doc["data"],
            step=doc["step"],
            attempt=doc["attempt"],
            done=tuple(doc["done"]),
            awaiting=tuple(
                Awaiting(a["kind"], a["step"], tuple(a["replies"]), a["message_id"])
                for a in doc["awaiting"]
            ),
            deadline_at=datetime.fromisoformat(doc["deadline_at"]) if doc["deadline_at"] else None,
            reason=doc["reason"],
            version=doc["version"],
        )


@dataclass(frozen=True, slots=True)
class Send:
    command: Command
    message_id: str
    kind: str
    step: str


@dataclass(frozen=True, slots=True)
class LogEntry:
    event: str
    step: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    state: SagaState
    commands: tuple[Send, ...] = ()
    log: tuple[LogEntry, ...] = ()
    accepted: bool = True


@dataclass(frozen=True, slots=True)
class Reply:
    message: Message
    message_id: str


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    pass


@dataclass(frozen=True, slots=True)
class OperatorRetry:
    """Send the awaited commands again (same ids). Who asked and why go into the saga log."""

    operator: str = "operator"
    reason: str = "retry asked by an operator"


@dataclass(frozen=True, slots=True)
class OperatorCompensate:
    """Stop the forward path and compensate; refused once the pivot was asked for."""

    reason: str = "compensation forced by an operator"
    operator: str = "operator"


Input = Reply | DeadlinePassed | OperatorRetry | OperatorCompensate
