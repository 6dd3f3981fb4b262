"""`orderflow check`: verify every invariant of DESIGN.md against the four databases and the broker.

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
import base64
import json
import os
import shutil
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any, TypeVar, cast

import aio_pika

from libs.contracts import TOPOLOGY
from libs.errors import OrderflowError
from libs.messages.registry import Message
from libs.messaging import deadletters
from libs.messaging.admin import vhost_of
from libs.messaging.connection import connect as amqp_connect
from libs.pg.pool import Conn, connect
from libs.saga.engine import command_id
from libs.settings import Settings
from orderflow import invariants
from orderflow.invariants import CheckReport, Snapshot
from orderflow.system import SERVICES
from saga.bootstrap import coordinator

__all__ = ["CheckReport", "check"]

T = TypeVar("T")
SAGA = "order"
EXAMPLES = 3  # rows named in a violation about many
REASONS_READ = 200  # dead letters read per queue to tell why they died
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


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
                _in(settings, s, partial(_read, service=s, grace=deadline_grace, ids=ids))
                for s in SERVICES
            )
        )
    except BaseException:
        broker.cancel()
        raise
    snap = _snapshot(order_db | payment_db | inventory_db | saga_db)
    has_refused = bool(order_db["has_refused"][0]["exists"])

    report.figures["orders"] = dict(Counter(o["status"] for o in snap.orders))
    report.figures["orders_total"] = len(snap.orders)
    report.figures["refused"] = (
        sum(1 for o in snap.orders if o["refused"]) if has_refused else "no refused column"
    )

    retries = settings.saga.retries
    invariants.orders_and_sagas(report, snap, allow_pending=allow_pending, retries=retries)
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
    conn = await connect(settings.dsn_for(service), application_name="orderflow-check")
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await read(conn)
    finally:
        await conn.close()


async def _rows(conn: Conn, query: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(query, *args)]


QUERIES = {
    "order_svc": {
        "orders": "SELECT id::text, customer_id, status, total, {refused}, updated_at FROM orders",
        "lines": "SELECT order_id::text, sku, quantity, unit_price FROM order_lines",
    },
    "payment_svc": {
        "customers": "SELECT id, balance, opening_balance FROM customers",
        "ledger": "SELECT order_id::text, customer_id, kind, amount FROM ledger",
        "payments": "SELECT order_id::text, amount, status, created_at, updated_at FROM payments",
    },
    "inventory_svc": {
        "stock": "SELECT sku, on_hand, opening_on_hand FROM stock",
        "reservations": "SELECT order_id::text, status, created_at, updated_at FROM reservations",
        "reservation_lines": "SELECT order_id::text, sku, quantity FROM reservation_lines",
    },
    "saga": {
        "sagas": f"""SELECT id, status, step, attempt,
                    deadline_at < clock_timestamp() - make_interval(secs => {{grace}}) AS overdue
                    FROM saga_instance WHERE saga = '{SAGA}'""",
        # re-sends logged since the instance entered its current state, for those not ended
        "resend_counts": f"""SELECT l.saga_id, count(*) AS n
                 FROM saga_log l JOIN saga_instance i
                   ON i.saga = l.saga AND i.id = l.saga_id AND i.status = l.status
                WHERE l.saga = '{SAGA}' AND i.status NOT IN ('COMPLETED', 'COMPENSATED')
                  AND l.event IN ('retry', 'operator_retry')
                GROUP BY l.saga_id""",
    },
}
COMMON = {  # every service database has an outbox and an inbox
    "outbox": """SELECT count(*) FILTER (WHERE published_at IS NULL AND dead_at IS NULL) AS pending,
                        count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead FROM outbox""",
    "outbox_pending": f"""SELECT aggregate_type, aggregate_id, message_type,
                   round(extract(epoch FROM clock_timestamp() - created_at)::numeric, 1) AS age
              FROM outbox WHERE published_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT {EXAMPLES}""",
    "outbox_dead": f"""SELECT aggregate_type, aggregate_id, message_type, last_error
              FROM outbox WHERE dead_at IS NOT NULL ORDER BY id LIMIT {EXAMPLES}""",
    "inbox": "SELECT consumer, message_type, count(*) AS n FROM inbox GROUP BY 1, 2 ORDER BY 1, 2",
    "inbox_oldest": "SELECT min(processed_at) AS at FROM inbox WHERE consumer = '{service}'",
}
REFUSED_COLUMN = """SELECT EXISTS (SELECT 1 FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'orders' AND column_name = 'refused')"""


async def _read(
    conn: Conn, service: str, grace: float, ids: Callable[[str, str, str], str]
) -> Tables:
    """One service's tables (``orders.refused`` read as false where the column is missing),
    and the inbox records its effects imply that its inbox lacks."""
    tables: Tables = {}
    if service == "order_svc":
        tables["has_refused"] = await _rows(conn, REFUSED_COLUMN)
    refused = "refused" if tables.get("has_refused", [{}])[0].get("exists") else "false AS refused"
    for name, query in (QUERIES[service] | COMMON).items():
        sql = query.format(refused=refused, grace=float(grace), service=service)
        tables[name] = await _rows(conn, sql)
    wanted = invariants.expected_inbox(_snapshot(tables), ids).get(service, [])
    # an inbox may have been pruned: effects older than its oldest record are not checked
    oldest = tables["inbox_oldest"][0]["at"]
    wanted = [e for e in wanted if oldest is None or e.at is None or e.at >= oldest]
    absent = await _rows(
        conn,
        """SELECT m::text AS id FROM unnest($2::uuid[]) AS m
            WHERE NOT EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = $1 AND i.message_id = m)""",
        service,
        [e.message_id for e in wanted],
    )
    missing = {r["id"] for r in absent}
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

    async def existing(conn: Conn) -> set[str]:
        rows = await _rows(
            conn,
            "SELECT id::text FROM orders WHERE id::text = ANY($1::text[])",
            sorted({order_id for order_id, _ in found}),
        )
        return {r["id"] for r in rows}

    # an order placed after the snapshot of order_svc is not an orphan
    placed_since = await _in(settings, "order_svc", existing)
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
    unacked = asyncio.create_task(unacked_counts(settings.amqp_url)) if count_unacked else None
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


async def unacked_counts(amqp_url: str) -> dict[str, int] | None:
    """Messages delivered and not yet acked, per queue of the URL's vhost; None when unknown.

    AMQP tells only what is ready; this asks ``rabbitmqctl`` (a local broker) or the management
    API (``ORDERFLOW_RABBITMQ_API``, default port 15672 of the broker's host). Both report the
    broker's statistics, refreshed every ``collect_statistics_interval`` (5 s by default): a
    check run within seconds of the last delivery may see a count that is already stale."""
    vhost = vhost_of(amqp_url)
    parts = urllib.parse.urlsplit(amqp_url)
    host = parts.hostname or "127.0.0.1"
    if shutil.which("rabbitmqctl") and host in LOCAL_HOSTS:
        found = await _rabbitmqctl_unacked(vhost)
        if found is not None:
            return found
    return await asyncio.to_thread(_api_unacked, host, vhost, parts)


async def _rabbitmqctl_unacked(vhost: str) -> dict[str, int] | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *("rabbitmqctl", "-q", "list_queues", "-p", vhost, "--formatter", "json"),
            *("name", "messages_unacknowledged"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
        except TimeoutError:
            proc.kill()
            return None
        queues = json.loads(out) if proc.returncode == 0 else []
        return {q["name"]: int(q["messages_unacknowledged"]) for q in queues} or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _api_unacked(host: str, vhost: str, amqp: urllib.parse.SplitResult) -> dict[str, int] | None:
    base = os.environ.get("ORDERFLOW_RABBITMQ_API", f"http://{host}:15672")
    user = os.environ.get("ORDERFLOW_RABBITMQ_ADMIN_USER") or amqp.username or "guest"
    password = os.environ.get("ORDERFLOW_RABBITMQ_ADMIN_PASSWORD") or amqp.password or "guest"
    request = urllib.request.Request(
        f"{base}/api/queues/{urllib.parse.quote(vhost, safe='')}"
        "?columns=name,messages_unacknowledged",
        headers={
            "authorization": "Basic "
            + base64.b64encode(
                f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
            ).decode()
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return {
                q["name"]: int(q.get("messages_unacknowledged") or 0)
                for q in json.loads(response.read())
            }
    except (OSError, ValueError, KeyError, TypeError):
        return None
