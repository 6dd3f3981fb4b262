"""Operator actions on saga instances; each is a transition, recorded in the saga log."""

from __future__ import annotations

from datetime import UTC, datetime

from libs.errors import OrderflowError
from libs.outbox.unit_of_work import unit_of_work
from libs.pg.pool import connection
from libs.saga import store
from libs.saga.state import Input, OperatorCompensate, OperatorRetry, Transition
from libs.settings import Settings
from saga.bootstrap import coordinator


class NoSuchSaga(OrderflowError):
    pass


class BadOperatorInput(OrderflowError):
    pass


async def act(settings: Settings, order_id: str, action: Input) -> Transition:
    coord = coordinator(settings)
    async with (
        connection(settings.dsn_for("saga"), application_name="orderflow-cli") as conn,
        unit_of_work(conn) as uow,
    ):
        loaded = await store.load_for_update(conn, saga=coord.definition.name, saga_id=order_id)
        if loaded is None:
            raise NoSuchSaga(f"no saga for order {order_id}; list them with `orderflow saga list`")
        # returned once the unit of work committed (and woke the relay)
        return await coord.transition(conn, uow, loaded.state, action, now=datetime.now(UTC))


async def retry(
    settings: Settings, order_id: str, *, operator: str, reason: str = "retry asked by an operator"
) -> Transition:
    return await act(
        settings, order_id, OperatorRetry(operator=_clean(operator), reason=_clean(reason))
    )


async def compensate(
    settings: Settings, order_id: str, *, operator: str, reason: str
) -> Transition:
    return await act(
        settings, order_id, OperatorCompensate(reason=_clean(reason), operator=_clean(operator))
    )


def _clean(text: str, limit: int = 200) -> str:
    """One printable line, bounded: it is written to the saga log and shown in pages."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if not line:
        raise BadOperatorInput("the operator's name and the reason must not be empty")
    return line[:limit]
