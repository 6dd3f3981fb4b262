"""Export a saga definition as a Mermaid state diagram (``orderflow saga diagram``)."""

from __future__ import annotations

from libs.messages.registry import Message
from libs.saga.definition import SagaDefinition


def _label(model: type[Message]) -> str:
    return model.__name__


def mermaid(definition: SagaDefinition) -> str:
    """A ``stateDiagram-v2`` of the steps, their replies, deadlines and compensations."""
    first = definition.steps[0].name
    out = ["stateDiagram-v2", f"    [*] --> {first}: {_label(definition.start)}"]
    undo: list[str] = []
    for index, step in enumerate(definition.steps):
        last = index + 1 == len(definition.steps)
        target = "COMPLETED" if last else definition.steps[index + 1].name
        out.append(f"    {step.name}: {step.name} (sends {_label(step.command)})")
        out.append(f"    {step.name} --> {target}: {_label(step.success)}")
        if step.failure is not None:
            out.append(f"    {step.name} --> COMPENSATING: {_label(step.failure)}")
        if step.retries is None:
            out.append(
                f"    {step.name} --> {step.name}: no reply in {step.deadline:g}s, re-send (never gives up)"
            )
        else:
            out.append(
                f"    {step.name} --> {step.name}: no reply in {step.deadline:g}s, re-send same id"
            )
            out.append(
                f"    {step.name} --> COMPENSATING: still no reply after {step.retries + 1} sends"
            )
        if step.compensation_command is not None and step.compensation_reply is not None:
            undo.append(f"{_label(step.compensation_command)} → {_label(step.compensation_reply)}")
    out.append("    COMPENSATING: COMPENSATING (" + ("; ".join(undo) or "nothing to undo") + ")")
    out.append(
        f"    COMPENSATING --> COMPENSATED: {_label(definition.failure_command)} → "
        f"{_label(definition.failure_reply)}"
    )
    out += ["    COMPLETED --> [*]", "    COMPENSATED --> [*]"]
    return "\n".join(out) + "\n"
