"""`orderflow check`: verify every invariant (docs/operations.md, "Invariants") against the four databases and the broker.

Meant for a quiet system; ``allow_pending`` tolerates what is in flight. The rules are in
:mod:`orderflow.invariants` (orders and sagas, refused orders, stuck sagas, money, stock, order
totals, orphans, outboxes, inboxes); this module reads one consistent snapshot per database, asks
order_svc again about apparent orphans, asks each inbox for the records the effects imply, and
looks at the broker: backlogs of the service queues (ready and unacked) and dead letters, which
are violations unless allowed (then notes, with their reasons). Each violation names the order,
customer, SKU, service or queue it concerns.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

import aio_pika

from contracts import TOPOLOGY
from libs.errors import OrderflowError
from libs.inbox import store as inbox_store
from libs.messages.registry import Message
from libs.messaging import deadletters
from libs.messaging.admin import unacked_counts, vhost_of
from libs.messaging.connection import connect as amqp_connect
from libs.outbox import store as outbox_store
from libs.pg.pool import Conn, connection
from libs.saga.engine import command_id
from libs.secrets import url_list
from libs.settings import Settings
from order_svc import queries as order_queries
from orderflow import invariants
from orderflow.invariants import CheckReport, Snapshot
from orderflow.system import SERVICES, service_queries
from saga.bootstrap import coordinator
from saga.domain import order_saga

__all__ = ["CheckReport", "check"]

T = TypeVar("T")
SAGA = order_saga.NAME
EXAMPLES = 3  # rows named in a violation about many
REASONS_READ = 200  # dead letters read per queue to tell why they died
STATISTICS_LAG = 5.5  # s: the broker's queue statistics are refreshed every 5 s (its default)


async def check(
    settings: Settings,
    *,
    allow_pending: bool = False,
    deadline_grace: float = 2.0,
    allow_dead_letters: bool = False,
    count_unacked: bool = False,
) -> CheckReport:
    """Every invariant, read from the four databases and the broker.

    ``allow_dead_letters`` turns dead letters into notes (the chaos harness accounts for the
    ones it injects itself); without it, as with ``orderflow check``, they fail the check.
    ``count_unacked`` also counts the deliveries not acked yet (a second or two of
    ``rabbitmqctl``: ``orderflow check`` does, loops that wait for quiet need not).
    """
    report = CheckReport()
    ids = partial(command_id, coordinator(settings).definition)
    # the broker meanwhile (unacked deliveries matter only once quiet)
    unacked = count_unacked and not allow_pending
    broker = asyncio.create_task(_look_at_broker(settings, count_unacked=unacked))
    try:
        order_db, payment_db, inventory_db, saga_db = await asyncio.gather(
            *(
                _in(
                    settings,
                    s,
                    partial(
                        _read,
                        service=s,
                        grace=deadline_grace,
                        ids=ids,
                        inbox_horizon=settings.retention.inbox,
                    ),
                )
                for s in SERVICES
            )
        )
    except BaseException:
        broker.cancel()
        raise
    snap = _snapshot(order_db | payment_db | inventory_db | saga_db)

    report.figures["orders"] = dict(Counter(o["status"] for o in snap.orders))
    report.figures["orders_total"] = len(snap.orders)
    report.figures["refused"] = sum(1 for o in snap.orders if o["refused"])

    retries = settings.saga.retries
    now = datetime.now(UTC)
    invariants.orders_and_sagas(
        report,
        snap,
        allow_pending=allow_pending,
        retries=retries,
        sagas_pruned_before=now - timedelta(seconds=settings.retention.sagas),
    )
    invariants.order_totals(report, snap)
    invariants.money(report, snap, allow_pending=allow_pending)
    invariants.stock(report, snap, allow_pending=allow_pending)
    await _orphans(report, settings, snap)

    dbs = dict(zip(SERVICES, (order_db, payment_db, inventory_db, saga_db), strict=True))
    invariants.outboxes(report, dbs, allow_pending=allow_pending)
    _inboxes(report, settings, dbs)
    view = await broker
    _judge_broker(report, view, allow_pending=allow_pending, allow_dead_letters=allow_dead_letters)
    if unacked and view.unacked is None and view.error is None:
        report.note(
            "unacked deliveries not counted: neither rabbitmqctl nor the management API "
            "(ORDERFLOW_RABBITMQ_API) answered"
        )
    return report


# -- reading -------------------------------------------------------------------------------------

Tables = dict[str, list[dict[str, Any]]]


async def _in(settings: Settings, service: str, read: Callable[[Conn], Awaitable[T]]) -> T:
    """``read`` on one connection to a service's database, in one consistent read-only view."""
    async with (
        connection(settings.dsn_for(service), application_name="orderflow-check") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        return await read(conn)


async def _read(
    conn: Conn,
    service: str,
    grace: float,
    ids: Callable[[str, str, str], str],
    inbox_horizon: float,
) -> Tables:
    """One service's tables (from its own ``queries`` module), its outbox and inbox, and the
    inbox records its effects imply that its inbox lacks (every effect younger than the inbox
    retention horizon must have its record)."""
    tables: Tables = await service_queries(service).check_tables(conn, grace=grace)
    tables |= await outbox_store.check_tables(conn, examples=EXAMPLES)
    tables["inbox"] = await inbox_store.counts_by_type(conn)
    # records older than the inbox's retention may be gone: only younger effects must have one
    kept_since = datetime.now(UTC) - timedelta(seconds=inbox_horizon)
    wanted = [
        e
        for e in invariants.expected_inbox(_snapshot(tables), ids).get(service, [])
        if e.at is None or e.at >= kept_since
    ]
    missing = await inbox_store.missing(
        conn, consumer=service, message_ids=[e.message_id for e in wanted]
    )
    tables["inbox_missing"] = [asdict(e) for e in wanted if e.message_id in missing]
    tables["inbox_checked"] = [{"n": len(wanted)}]
    return tables


def _snapshot(tables: Tables) -> Snapshot:
    names = [f.name for f in fields(Snapshot) if f.name != "resends"]
    return Snapshot(
        **{name: tables.get(name, []) for name in names},
        resends={r["saga_id"]: r["n"] for r in tables.get("resend_counts", [])},
    )


# -- orphans, outboxes, inboxes ------------------------------------------------------------------


async def _orphans(report: CheckReport, settings: Settings, snap: Snapshot) -> None:
    found = invariants.orphans(snap)
    if not found:
        return

    # an order placed after the snapshot of order_svc is not an orphan
    asked = sorted({order_id for order_id, _ in found})
    placed_since = await _in(
        settings, "order_svc", partial(order_queries.existing, order_ids=asked)
    )
    for order_id, sentence in found:
        if order_id not in placed_since:
            report.violation(sentence)


def _handled(settings: Settings) -> dict[str, set[str]]:
    """Per service, the message types its consumer handles."""
    from inventory_svc.handlers import HANDLERS as INVENTORY
    from order_svc.handlers import HANDLERS as ORDER
    from payment_svc.handlers import HANDLERS as PAYMENT

    def types(classes: Any) -> set[str]:
        return {cast(type[Message], c).TYPE for c in classes}

    return {
        "order_svc": types(ORDER),
        "payment_svc": types(PAYMENT),
        "inventory_svc": types(INVENTORY),
        "saga": types(coordinator(settings).definition.replies()),
    }


def _inboxes(report: CheckReport, settings: Settings, dbs: dict[str, Tables]) -> None:
    handled = _handled(settings)
    for service, tables in dbs.items():
        invariants.inbox(
            report, service, tables["inbox"], tables["inbox_missing"], handled[service]
        )
    report.figures["inbox_records_checked"] = {
        service: tables["inbox_checked"][0]["n"] for service, tables in dbs.items()
    }


# -- the broker ----------------------------------------------------------------------------------


@dataclass
class BrokerView:
    error: str | None = None
    unacked: dict[str, int] | None = None
    queues: dict[str, tuple[int, int] | str] = field(default_factory=dict)  # ready, consumers
    dead: dict[str, int] = field(default_factory=dict)
    letters: dict[str, list[deadletters.DeadLetter]] = field(default_factory=dict)


async def _look_at_broker(settings: Settings, *, count_unacked: bool) -> BrokerView:
    """Depths of the service and dead-letter queues; dead letters read, not taken."""
    view = BrokerView()
    count = partial(
        unacked_counts,
        vhost_of(settings.amqp_url),
        host=urllib.parse.urlsplit(url_list(settings.amqp_url)[0]).hostname or "127.0.0.1",
        api=settings.management_api(),
    )
    unacked = asyncio.create_task(settled_unacked(count)) if count_unacked else None
    try:
        connection = await amqp_connect(settings.amqp_url, name="orderflow-check")
    except OrderflowError as exc:
        if unacked is not None:
            unacked.cancel()
        view.error = str(exc)
        return view
    try:
        channel = await connection.channel()
        for spec in TOPOLOGY.queues:
            try:  # passive declares: what is there, changing nothing
                queue = await channel.declare_queue(spec.name, passive=True)
                dlq = await channel.declare_queue(spec.dead_letter_queue, passive=True)
            except aio_pika.exceptions.AMQPError as exc:
                view.queues[spec.name] = f"cannot read it or {spec.dead_letter_queue} ({exc})"
                channel = await connection.channel()  # the broker closed that one
                continue
            ready = queue.declaration_result
            view.queues[spec.name] = (ready.message_count or 0, ready.consumer_count or 0)
            dead = view.dead[spec.dead_letter_queue] = dlq.declaration_result.message_count or 0
            if dead:
                view.letters[spec.dead_letter_queue] = await deadletters.list_dead_letters(
                    connection, [spec.dead_letter_queue], limit=REASONS_READ
                )
    finally:
        await connection.close()
        view.unacked = await unacked if unacked is not None else None
    return view


async def settled_unacked(
    count: Callable[[], Awaitable[dict[str, int] | None]], *, lag: float = STATISTICS_LAG
) -> dict[str, int] | None:
    """Unacked deliveries per queue, as counted twice a statistics refresh apart.

    The broker's count may be up to ``lag`` seconds old, so a delivery acked a moment ago (a
    late re-send handled just before the check) can still show. A queue is taken as holding
    messages only when the second count, made after the statistics were refreshed, agrees; a
    delivery that is really stuck shows both times. Costs ``lag`` only when the first count
    is not all zeros."""
    first = await count()
    if not first or not any(first.values()):
        return first
    await asyncio.sleep(lag)
    second = await count()
    if second is None:
        return first
    return {name: min(held, second.get(name, 0)) for name, held in first.items()}


def _judge_broker(
    report: CheckReport, view: BrokerView, *, allow_pending: bool, allow_dead_letters: bool
) -> None:
    """No backlog in the service queues once quiet; no dead letters unless allowed."""
    if view.error is not None:
        report.violation(f"broker: {view.error}; its queues and dead letters were not checked")
        return
    queues: dict[str, dict[str, int | None]] = {}
    for name, depth in view.queues.items():
        if isinstance(depth, str):
            report.violation(f"queue {name}: {depth}; declare the topology with `orderflow setup`")
            continue
        ready, consumers = depth
        held = None if view.unacked is None else view.unacked.get(name)
        queues[name] = {"ready": ready, "unacked": held, "consumers": consumers}
        if (ready or held) and not allow_pending:
            report.violation(
                f"queue {name} has a backlog though the system should be quiet: "
                f"{ready} message(s) ready, {'?' if held is None else held} unacked, "
                f"{consumers} consumer(s)"
            )
    for dlq, count in view.dead.items():
        if count:
            text = (
                f"dead-letter queue {dlq} holds {count} message(s): "
                + invariants.dead_letter_reasons(view.letters.get(dlq, []))
            )
            if allow_dead_letters:
                report.note(text)
            else:
                report.violation(text + " (see `orderflow dlq list`)")
    report.figures["queues"] = queues
    report.figures["dead_letters"] = view.dead
