"""The saga as a pure transition: ``(state, input) -> (state', commands, log entries)``.

No I/O, no clock of its own (``now`` is passed in), no randomness: command message ids are derived
from the instance, the step and the kind of command, so a re-send carries the same id and a
replayed transition produces the same messages.

Lifecycle::

    RUNNING(step i) --success--> RUNNING(step i+1) ... --last success--> COMPLETED
    RUNNING(step i) --failure reply | retries exhausted | operator--> COMPENSATING
    COMPENSATING: compensations of completed steps, in parallel, each awaited; then the failure
                  action (e.g. RejectOrder), awaited --> COMPENSATED

A step that timed out may still be applied late, so its compensation is sent too, without
waiting for the reply (the participant may be the one that is down); participants leave a
tombstone so that the late command is refused. Deadlines re-send the awaited commands with the
same ids: ``retries`` times in RUNNING, without limit while compensating (an instance whose
compensation keeps timing out is *stuck* and shown by ``orderflow saga list --stuck``).
Replies nobody awaits — stale, duplicate, unexpected — change nothing and are logged.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from libs.messages.registry import Command, Event, Message
from libs.saga.definition import SagaDefinition, Step
from libs.saga.state import (
    TERMINAL,
    Awaiting,
    DeadlinePassed,
    Input,
    LogEntry,
    OperatorCompensate,
    OperatorRetry,
    Reply,
    SagaState,
    Send,
    Status,
    Transition,
)

__all__ = ["command_id", "start", "transition"]

_NAMESPACE = uuid.UUID("6f1c9a52-0d55-4a43-9a7e-3c0f6b1d2e11")


def command_id(definition: SagaDefinition, saga_id: str, kind: str, step: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{definition.name}:{saga_id}:{kind}:{step}"))


def start(definition: SagaDefinition, event: Event, *, now: datetime) -> Transition:
    """A new instance from its starting event; sends the first step's action."""
    data = definition.data(event)
    state = SagaState(id=definition.key(event), status=Status.RUNNING, data=data)
    first = definition.steps[0]
    state, sends = _run_step(definition, state, first, now=now)
    return Transition(
        state, sends, (LogEntry("started", first.name, {"data": data}), *_sent_entries(sends))
    )


def transition(
    definition: SagaDefinition, state: SagaState, event: Input, *, now: datetime
) -> Transition:
    """What ``event`` does to ``state``; an input that does not apply is ignored and logged."""
    if isinstance(event, Reply):
        return _on_reply(definition, state, event, now=now)
    if isinstance(event, DeadlinePassed):
        return _on_deadline(definition, state, now=now)
    if isinstance(event, OperatorRetry):
        return _operator(_on_operator_retry(definition, state, now=now), event)
    return _operator(_on_operator_compensate(definition, state, event.reason, now=now), event)


def _operator(t: Transition, event: OperatorRetry | OperatorCompensate) -> Transition:
    """Every log entry of an operator's action names the operator and the reason, refusals too."""
    who = {"operator": event.operator, "reason": event.reason}
    return replace(t, log=tuple(replace(e, detail={**e.detail, **who}) for e in t.log))


# -- replies ---------------------------------------------------------------------------------


def _on_reply(
    definition: SagaDefinition, state: SagaState, reply: Reply, *, now: datetime
) -> Transition:
    type_name = reply.message.TYPE
    match = next((a for a in state.awaiting if type_name in a.replies), None)
    if state.status in TERMINAL or match is None:
        why = "saga already ended" if state.status in TERMINAL else "no command awaits this reply"
        return _ignored(state, type_name, reply.message_id, why)
    entry = LogEntry(
        "reply",
        match.step,
        {"type": type_name, "message_id": reply.message_id, **_reason_of(reply.message)},
    )
    if match.kind == "action":
        step = definition.step(match.step)
        if step.failure is not None and type_name == step.failure.TYPE:
            reason = _reason_of(reply.message).get("reason") or f"{step.name} failed"
            t = _compensate(
                definition, state, reason=f"{step.name}: {reason}", timed_out=None, now=now
            )
            return replace(t, log=(entry, *t.log))
        done = (*state.done, step.name)
        index = definition.steps.index(step)
        if index + 1 == len(definition.steps):
            final = replace(
                state,
                status=Status.COMPLETED,
                step=None,
                done=done,
                awaiting=(),
                deadline_at=None,
                attempt=0,
                version=state.version + 1,
            )
            return Transition(final, (), (entry, LogEntry("completed")))
        nxt = definition.steps[index + 1]
        new_state, sends = _run_step(definition, replace(state, done=done), nxt, now=now)
        return Transition(new_state, sends, (entry, *_sent_entries(sends)))
    remaining = tuple(a for a in state.awaiting if a is not match)
    if match.kind == "failure":
        final = replace(
            state,
            status=Status.COMPENSATED,
            awaiting=(),
            deadline_at=None,
            step=None,
            attempt=0,
            version=state.version + 1,
        )
        return Transition(
            final, (), (entry, LogEntry("compensated", None, {"reason": state.reason}))
        )
    # a compensation reply
    if remaining:
        return Transition(
            replace(state, awaiting=remaining, version=state.version + 1), (), (entry,)
        )
    new_state, sends = _send_failure_action(definition, replace(state, awaiting=()), now=now)
    return Transition(new_state, sends, (entry, *_sent_entries(sends)))


# -- deadlines and operators -------------------------------------------------------------------


def _on_deadline(definition: SagaDefinition, state: SagaState, *, now: datetime) -> Transition:
    if state.status in TERMINAL or state.deadline_at is None or now < state.deadline_at:
        return Transition(state, (), (), accepted=False)
    if state.status is Status.RUNNING:
        step = definition.step(state.step or "")
        if step.retries is not None and state.attempt > step.retries:
            reason = f"{step.name}: no reply after {state.attempt} attempts"
            t = _compensate(definition, state, reason=reason, timed_out=step, now=now)
            return replace(
                t, log=(LogEntry("timed_out", step.name, {"attempts": state.attempt}), *t.log)
            )
    return _resend(definition, state, now=now, event="retry")


def _on_operator_retry(
    definition: SagaDefinition, state: SagaState, *, now: datetime
) -> Transition:
    if state.status in TERMINAL:
        return _ignored(state, "operator retry", None, "saga already ended")
    return _resend(definition, state, now=now, event="operator_retry")


def _on_operator_compensate(
    definition: SagaDefinition, state: SagaState, reason: str, *, now: datetime
) -> Transition:
    if state.status is not Status.RUNNING:
        return _ignored(
            state, "operator compensate", None, f"saga is {state.status.value}, not RUNNING"
        )
    step = definition.step(state.step or "")
    if step is definition.steps[-1]:
        return _ignored(
            state,
            "operator compensate",
            None,
            f"the last step ({step.name}) was already asked for; too late to compensate",
        )
    t = _compensate(definition, state, reason=reason, timed_out=step, now=now)
    return replace(t, log=(LogEntry("operator_compensate", step.name, {"reason": reason}), *t.log))


def _resend(
    definition: SagaDefinition, state: SagaState, *, now: datetime, event: str
) -> Transition:
    """Send every awaited command again, same ids, with a fresh deadline."""
    sends = tuple(_rebuild(definition, state, a) for a in state.awaiting)
    deadline = now + timedelta(seconds=_deadline_for(definition, state))
    new_state = replace(
        state, attempt=state.attempt + 1, deadline_at=deadline, version=state.version + 1
    )
    entries = tuple(
        LogEntry(
            event,
            s.step,
            {
                "kind": s.kind,
                "type": s.command.TYPE,
                "message_id": s.message_id,
                "attempt": new_state.attempt,
            },
        )
        for s in sends
    )
    return Transition(new_state, sends, entries)


# -- compensation ----------------------------------------------------------------------------


def _compensate(
    definition: SagaDefinition,
    state: SagaState,
    *,
    reason: str,
    timed_out: Step | None,
    now: datetime,
) -> Transition:
    sends: list[Send] = []
    awaiting: list[Awaiting] = []
    if timed_out is not None and timed_out.compensation is not None:
        # fire and forget: the participant may be the one that is down; its tombstone makes a
        # late action harmless, and the reply, whenever it comes, is ignored.
        sends.append(_send(definition, state, "compensation", timed_out, timed_out.compensation))
    for name in reversed(state.done):
        step = definition.step(name)
        if step.compensation is None or step.compensation_reply is None:
            continue
        send = _send(definition, state, "compensation", step, step.compensation)
        sends.append(send)
        awaiting.append(
            Awaiting("compensation", step.name, (step.compensation_reply.TYPE,), send.message_id)
        )
    compensating = replace(
        state,
        status=Status.COMPENSATING,
        reason=reason,
        step=None,
        awaiting=tuple(awaiting),
        attempt=1,
    )
    entry = LogEntry("compensating", timed_out.name if timed_out else None, {"reason": reason})
    if not awaiting:
        new_state, final = _send_failure_action(definition, compensating, now=now)
        return Transition(new_state, (*sends, *final), (entry, *_sent_entries((*sends, *final))))
    deadline = now + timedelta(seconds=max(definition.step(a.step).deadline for a in awaiting))
    new_state = replace(compensating, deadline_at=deadline, version=state.version + 1)
    return Transition(new_state, tuple(sends), (entry, *_sent_entries(tuple(sends))))


def _send_failure_action(
    definition: SagaDefinition, state: SagaState, *, now: datetime
) -> tuple[SagaState, tuple[Send, ...]]:
    command = definition.failure_action(state.data, state.reason or "failed")
    message_id = command_id(definition, state.id, "failure", "failure")
    send = Send(command, message_id, "failure", "failure")
    awaiting = (Awaiting("failure", "failure", (definition.failure_reply.TYPE,), message_id),)
    new_state = replace(
        state,
        awaiting=awaiting,
        attempt=1,
        deadline_at=now + timedelta(seconds=definition.failure_deadline),
        version=state.version + 1,
    )
    return new_state, (send,)


# -- helpers ---------------------------------------------------------------------------------


def _run_step(
    definition: SagaDefinition, state: SagaState, step: Step, *, now: datetime
) -> tuple[SagaState, tuple[Send, ...]]:
    send = _send(definition, state, "action", step, step.action)
    replies = (step.success.TYPE,) + ((step.failure.TYPE,) if step.failure else ())
    new_state = replace(
        state,
        status=Status.RUNNING,
        step=step.name,
        attempt=1,
        awaiting=(Awaiting("action", step.name, replies, send.message_id),),
        deadline_at=now + timedelta(seconds=step.deadline),
        version=state.version + 1,
    )
    return new_state, (send,)


def _send(definition: SagaDefinition, state: SagaState, kind: str, step: Step, build: Any) -> Send:
    command = _built(step, kind, build(state.data))
    return Send(command, command_id(definition, state.id, kind, step.name), kind, step.name)


def _built(step: Step, kind: str, command: Command) -> Command:
    """The builder's command, checked against the type the step declares."""
    expected = step.command if kind == "action" else step.compensation_command
    if expected is None or not isinstance(command, expected):
        raise TypeError(f"step {step.name}: {kind} built {type(command).__name__}, not {expected}")
    return command


def _rebuild(definition: SagaDefinition, state: SagaState, awaiting: Awaiting) -> Send:
    if awaiting.kind == "failure":
        command = definition.failure_action(state.data, state.reason or "failed")
        return Send(command, awaiting.message_id, "failure", "failure")
    step = definition.step(awaiting.step)
    build = step.action if awaiting.kind == "action" else step.compensation
    assert build is not None
    return Send(
        _built(step, awaiting.kind, build(state.data)),
        awaiting.message_id,
        awaiting.kind,
        step.name,
    )


def _deadline_for(definition: SagaDefinition, state: SagaState) -> float:
    seconds = [
        definition.failure_deadline if a.kind == "failure" else definition.step(a.step).deadline
        for a in state.awaiting
    ]
    return max(seconds, default=definition.failure_deadline)


def _sent_entries(sends: tuple[Send, ...]) -> tuple[LogEntry, ...]:
    return tuple(
        LogEntry(
            "command_sent",
            s.step,
            {"kind": s.kind, "type": s.command.TYPE, "message_id": s.message_id},
        )
        for s in sends
    )


def _ignored(state: SagaState, what: str, message_id: str | None, why: str) -> Transition:
    return Transition(
        state,
        (),
        (LogEntry("ignored", state.step, {"type": what, "message_id": message_id, "why": why}),),
        accepted=False,
    )


def _reason_of(message: Message) -> dict[str, Any]:
    reason = getattr(message, "reason", None)
    return {"reason": reason} if reason else {}
