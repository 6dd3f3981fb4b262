"""Reading saga instances for people: pages by keys, the stuck ones, and what is still to come.

Pages are keyed on ``(created_at, id)``, newest first, never on offsets: the next page starts
after the last row shown, so a page costs the same at the first instance as at the 100,000th.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from libs.pg import Conn
from libs.pg.keyset import Cursor, page_of
from libs.saga.definition import SagaDefinition
from libs.saga.state import SagaState, Status
from libs.saga.store import InstanceRow

__all__ = ["PlannedStep", "page_instances", "plan", "stuck_instances"]

_COLUMNS = "id, status, step, attempt, deadline_at, created_at, updated_at, traceparent, state"


async def page_instances(
    conn: Conn,
    *,
    saga: str,
    status: str | None = None,
    step: str | None = None,
    data: dict[str, str] | None = None,
    older_than: float | None = None,
    after: Cursor | None = None,
    limit: int = 50,
) -> tuple[list[InstanceRow], Cursor | None]:
    """One page of instances, newest first, and the cursor of the next page (None: last page).

    ``data`` keeps the instances whose data contains these values (e.g. a customer);
    ``older_than`` those created more than that many seconds ago."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM saga_instance
             WHERE saga = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR step = $3)
               AND ($4::jsonb IS NULL OR state -> 'data' @> $4::jsonb)
               AND ($5::float8 IS NULL
                    OR created_at < clock_timestamp() - make_interval(secs => $5))
               AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::text))
             ORDER BY created_at DESC, id DESC LIMIT $8""",
        saga,
        status,
        step,
        json.dumps(data) if data else None,
        older_than,
        after.created_at if after else None,
        after.id if after else None,
        limit + 1,
    )
    return page_of([InstanceRow(**dict(r)) for r in rows], limit, lambda r: (r.created_at, r.id))


async def stuck_instances(
    conn: Conn, *, saga: str, older_than: float, limit: int = 100
) -> list[InstanceRow]:
    """Instances in flight that are stuck, oldest first: past their deadline, re-sending a
    command nobody answered, or running for longer than ``older_than`` seconds."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM saga_instance
             WHERE saga = $1 AND status IN ('RUNNING', 'COMPENSATING')
               AND (deadline_at < clock_timestamp() OR attempt > 1
                    OR created_at < clock_timestamp() - make_interval(secs => $2))
             ORDER BY created_at, id LIMIT $3""",
        saga,
        older_than,
        limit,
    )
    return [InstanceRow(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step of an instance's plan: done, under way (awaited now), or still to come."""

    name: str
    kind: str  # "action" | "compensation" | "failure"
    command: str
    state: str  # "done" | "awaiting" | "to come" | "if it fails"
    pivot: bool = False


def plan(definition: SagaDefinition, state_doc: dict[str, Any]) -> list[PlannedStep]:
    """The instance's steps from its definition: what it did, what it awaits, what is to come,
    and — while it runs forward — what a failure would compensate."""
    state = SagaState.from_json(state_doc)
    awaited = {(a.kind, a.step) for a in state.awaiting}
    steps: list[PlannedStep] = []

    def action(step_index: int, status: str) -> PlannedStep:
        step = definition.steps[step_index]
        return PlannedStep(
            step.name, "action", step.command.TYPE, status, pivot=step.retries is None
        )

    names = [s.name for s in definition.steps]
    if state.status is Status.COMPLETED:
        return [action(i, "done") for i in range(len(names))]
    if state.status is Status.RUNNING:
        current = names.index(state.step) if state.step in names else 0
        steps += [action(i, "done") for i in range(current)]
        steps.append(action(current, "awaiting"))
        steps += [action(i, "to come") for i in range(current + 1, len(names))]
        # what a failure from here on would undo: the steps done, newest first
        for step in reversed(definition.steps[:current]):
            if step.compensation_command is not None:
                steps.append(
                    PlannedStep(
                        step.name, "compensation", step.compensation_command.TYPE, "if it fails"
                    )
                )
        steps.append(
            PlannedStep("failure", "failure", definition.failure_command.TYPE, "if it fails")
        )
        return steps
    # compensating or compensated: compensations go out together, the failure action after them
    finished = state.status is Status.COMPENSATED
    failing = finished or any(a.kind == "failure" for a in state.awaiting)
    steps += [action(i, "done") for i, name in enumerate(names) if name in state.done]
    for step in reversed([s for s in definition.steps if s.name in state.done]):
        if step.compensation_command is None:
            continue
        mark = "awaiting" if ("compensation", step.name) in awaited else "done"
        steps.append(PlannedStep(step.name, "compensation", step.compensation_command.TYPE, mark))
    mark = "done" if finished else ("awaiting" if failing else "to come")
    steps.append(PlannedStep("failure", "failure", definition.failure_command.TYPE, mark))
    return steps
