"""A saga declared as data: steps with an action, the replies that end it, a compensation, a
deadline and a retry count; and what to do once compensation is over (the *failure action*).

Builders (``action``, ``compensation``, ``failure_action``) are pure functions of the saga's data
(a JSON-able dict taken from the starting event), so an instance can be rebuilt from its row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from libs.errors import ConfigurationError
from libs.messages.registry import Command, Event, Message

Data = Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    name: str
    command: type[Command]
    action: Callable[[Data], Command]
    success: type[Event]
    failure: type[Event] | None = None
    compensation_command: type[Command] | None = None
    compensation: Callable[[Data], Command] | None = None
    compensation_reply: type[Event] | None = None
    deadline: float = 10.0
    """Seconds to wait for a reply before the command is sent again."""
    retries: int | None = 2
    """Re-sends after the first send; then the step counts as failed. ``None``: never give up —
    for a pivot step after which compensation would be wrong (a late success could not be
    undone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaDefinition:
    name: str
    start: type[Event]
    data: Callable[[Event], dict[str, Any]]
    """The saga's data, from its starting event (JSON-able)."""
    key: Callable[[Message], str]
    """The instance a message belongs to (e.g. its order id)."""
    steps: tuple[Step, ...]
    failure_command: type[Command]
    failure_action: Callable[[Data, str], Command]
    failure_reply: type[Event]
    failure_deadline: float = 10.0

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names) or not names:
            raise ConfigurationError(f"saga {self.name}: step names must be unique and non-empty")
        for step in self.steps:
            parts = (step.compensation_command, step.compensation, step.compensation_reply)
            if any(p is None for p in parts) and any(p is not None for p in parts):
                raise ConfigurationError(
                    f"saga {self.name}: step {step.name} needs a compensation command, its "
                    "builder and its reply, or none of them"
                )

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def replies(self) -> set[type[Event]]:
        """Every event type the saga listens to."""
        types: set[type[Event]] = {self.start, self.failure_reply}
        for step in self.steps:
            types.add(step.success)
            if step.failure is not None:
                types.add(step.failure)
            if step.compensation_reply is not None:
                types.add(step.compensation_reply)
        return types
