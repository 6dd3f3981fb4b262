"""The invariants of `orderflow check`, as pure functions of one snapshot of the four databases.

- every order is CONFIRMED or REJECTED with exactly one saga that ended the matching way
  (COMPLETED / COMPENSATED) - except orders refused at placement (``orders.refused``):
  REJECTED, total 0, no lines, no saga, no payment, no reservation;
- no saga past its deadline, none re-sending beyond the retry policy (stuck re-sending);
- money: per customer, opening - balance = Σ charges - Σ refunds in the ledger = Σ totals of
  CONFIRMED orders; per order, CONFIRMED nets its total, REJECTED nets zero, every ledger amount
  is the order's total, on the order's customer, and the payment row agrees with the ledger;
- stock: per SKU, opening - on hand = Σ quantities RESERVED = Σ quantities of CONFIRMED orders,
  never negative; a reservation's lines are its order's lines; a CONFIRMED order holds a
  reservation, a REJECTED one holds nothing;
- an order's total is the sum of its lines;
- no orphans: payments, ledger rows, reservations, sagas of orders order_svc does not know;
- outboxes drained: nothing unpublished, nothing dead;
- inboxes: every effect has the inbox record of the saga command that made it, recorded by the
  service's own consumer, for a type it handles.

:mod:`orderflow.check` reads the snapshot (and looks at the broker); each function here adds one
sentence per violation to the report, naming the order, customer, SKU or service it concerns.
Rows are plain dicts, so the rules can be read (and tried) without a database.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from libs.messaging.deadletters import DeadLetter

ZERO = Decimal("0")
Row = Mapping[str, Any]
EXPECTED_SAGA = {"CONFIRMED": "COMPLETED", "REJECTED": "COMPENSATED"}
TERMINAL_SAGA = frozenset(EXPECTED_SAGA.values())


@dataclass
class CheckReport:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Worth knowing, not a violation (e.g. dead letters the caller allowed)."""

    @property
    def ok(self) -> bool:
        return not self.violations

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclass
class Snapshot:
    """What the checker read: order_svc, payment_svc, inventory_svc and saga rows."""

    orders: Sequence[Row] = field(default_factory=list)  # id, customer_id, status, total, refused
    lines: Sequence[Row] = field(default_factory=list)  # order_id, sku, quantity, unit_price
    sagas: Sequence[Row] = field(default_factory=list)  # id, status, step, attempt, overdue
    resends: dict[str, int] = field(default_factory=dict)  # saga id -> re-sends logged
    customers: Sequence[Row] = field(default_factory=list)  # id, balance, opening_balance
    ledger: Sequence[Row] = field(default_factory=list)  # order_id, customer_id, kind, amount
    payments: Sequence[Row] = field(default_factory=list)  # order_id, amount, status, ...
    stock: Sequence[Row] = field(default_factory=list)  # sku, on_hand, opening_on_hand
    reservations: Sequence[Row] = field(default_factory=list)  # order_id, status, ...
    reservation_lines: Sequence[Row] = field(default_factory=list)  # order_id, sku, quantity

    def order_of(self) -> dict[str, Row]:
        return {o["id"]: o for o in self.orders}

    def lines_of(self) -> dict[str, Counter[str]]:
        """Per order, quantity per SKU."""
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for line in self.lines:
            out[line["order_id"]][line["sku"]] += line["quantity"]
        return out


def _lines_text(lines: Mapping[str, int]) -> str:
    return ", ".join(f"{sku}:{qty}" for sku, qty in sorted(lines.items())) or "none"


# -- orders and their sagas ---------------------------------------------------------------------


def orders_and_sagas(
    report: CheckReport, snap: Snapshot, *, allow_pending: bool, retries: int
) -> None:
    """Every order terminal with exactly one saga that ended the matching way — except refused
    orders, which have none; no saga past its deadline or re-sending beyond the retry policy."""
    # one saga per order (the primary key) and a refused order REJECTED with total 0 (a CHECK)
    # are the schema's to keep; what it cannot keep is checked here
    saga_of = {s["id"]: s for s in snap.sagas}
    line_count = Counter(line["order_id"] for line in snap.lines)
    for o in snap.orders:
        s = saga_of.get(o["id"])
        if o["refused"]:
            if line_count[o["id"]]:
                report.violation(
                    f"order {o['id']} was refused at placement but has "
                    f"{line_count[o['id']]} line(s)"
                )
            if s is not None:
                report.violation(
                    f"order {o['id']} was refused at placement but has a saga ({s['status']})"
                )
            continue
        if o["status"] == "PENDING":
            if allow_pending:
                continue
            if s is not None and s["status"] in TERMINAL_SAGA:
                report.violation(f"order {o['id']} is PENDING but its saga is {s['status']}")
            else:
                report.violation(
                    f"order {o['id']} is still PENDING (saga: {s['status'] if s else 'none'})"
                )
            continue
        if s is None:
            report.violation(f"order {o['id']} is {o['status']} but has no saga")
        elif s["status"] != EXPECTED_SAGA[o["status"]] and (
            s["status"] in TERMINAL_SAGA or not allow_pending
        ):
            report.violation(f"order {o['id']} is {o['status']} but its saga is {s['status']}")
    # A step is sent once and re-sent `retries` times; then RUNNING compensates. Compensations
    # (and the pivot step) are re-sent without limit: beyond the policy, the saga is stuck.
    # Each re-send logs one row per awaited command (at most 2), in up to 2 phases per state.
    log_bound = 4 * (retries + 1)
    for s in snap.sagas:
        if s["status"] in TERMINAL_SAGA:
            continue
        if s["overdue"] and not allow_pending:
            report.violation(
                f"saga of order {s['id']} is {s['status']} at step "
                f"{s['step'] or 'compensation'} past its deadline"
            )
        logged = snap.resends.get(s["id"], 0)
        if s["attempt"] > retries + 1 or logged > log_bound:
            report.violation(
                f"saga of order {s['id']} is {s['status']} and stuck re-sending: attempt {s['attempt']} "
                f"of {s['step'] or 'its compensation'}, {logged} re-send(s) logged, beyond the "
                f"retry policy of {retries} re-send(s)"
            )


def order_totals(report: CheckReport, snap: Snapshot) -> None:
    """An order's total is the sum of its lines (quantity x unit price)."""
    sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for line in snap.lines:
        sums[line["order_id"]] += line["quantity"] * line["unit_price"]
    for o in snap.orders:
        if not o["refused"] and o["total"] != sums.get(o["id"], ZERO):
            report.violation(
                f"order {o['id']} has a total of {o['total']} but its lines sum to "
                f"{sums.get(o['id'], ZERO)}"
            )


# -- money ---------------------------------------------------------------------------------------


def money(report: CheckReport, snap: Snapshot, *, allow_pending: bool) -> None:
    """Per customer: opening - balance = Σ charges - Σ refunds in the ledger = Σ totals of
    CONFIRMED orders. Per order: CONFIRMED nets its total, REJECTED nets zero, every amount is
    the order's total, on the order's customer; the payment row agrees with the ledger."""
    order_of = snap.order_of()
    charged: dict[str, Decimal] = defaultdict(lambda: ZERO)
    refunded: dict[str, Decimal] = defaultdict(lambda: ZERO)
    ledger_net: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for entry in snap.ledger:
        sign = 1 if entry["kind"] == "charge" else -1
        (charged if sign == 1 else refunded)[entry["order_id"]] += entry["amount"]
        ledger_net[entry["customer_id"]] += sign * entry["amount"]
        o = order_of.get(entry["order_id"])
        if o is None:
            continue  # an orphan: see orphans()
        if o["refused"]:
            report.violation(
                f"order {o['id']} was refused at placement but has a ledger {entry['kind']} "
                f"of {entry['amount']}"
            )
            continue
        if entry["amount"] != o["total"]:
            report.violation(
                f"order {o['id']}: its ledger {entry['kind']} of {entry['amount']} is not its "
                f"total {o['total']}"
            )
        if entry["customer_id"] != o["customer_id"]:
            report.violation(
                f"order {o['id']}: its ledger {entry['kind']} is on customer "
                f"{entry['customer_id']}, but the order is customer {o['customer_id']}'s"
            )
    overcharged = 0
    confirmed_total: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for o in snap.orders:
        c, r = charged.get(o["id"], ZERO), refunded.get(o["id"], ZERO)
        if o["refused"]:
            continue
        if r and not c:
            report.violation(f"order {o['id']} was refunded {r} but never charged")
        if o["status"] == "CONFIRMED":
            confirmed_total[o["customer_id"]] += o["total"]
            if c - r != o["total"]:
                overcharged += c - r > o["total"]
                report.violation(
                    f"order {o['id']} is CONFIRMED for {o['total']} but nets {c - r} in the "
                    f"ledger (charged {c}, refunded {r})"
                )
        elif o["status"] == "REJECTED" and c != r:
            overcharged += c > r
            report.violation(
                f"order {o['id']} is REJECTED but nets {c - r} in the ledger "
                f"(charged {c}, refunded {r})"
            )
    _payments(report, snap, order_of, charged, refunded)
    known = set()
    for cust in snap.customers:
        known.add(cust["id"])
        spent = cust["opening_balance"] - cust["balance"]
        net = ledger_net.get(cust["id"], ZERO)
        if spent != net:
            overcharged += spent > net
            report.violation(
                f"customer {cust['id']}: balance is down {spent} from the opening balance but "
                f"the ledger nets {net}"
            )
        if not allow_pending and spent != confirmed_total.get(cust["id"], ZERO):
            report.violation(
                f"customer {cust['id']} spent {spent} but CONFIRMED orders total "
                f"{confirmed_total.get(cust['id'], ZERO)}"
            )
        if cust["balance"] < 0:
            report.violation(f"customer {cust['id']} has a negative balance {cust['balance']}")
    for customer_id in sorted(set(ledger_net) - known):
        report.violation(f"customer {customer_id} is in the ledger but not among the customers")
    # orders (and customers) that lost more money than they should: a double debit shows here
    report.figures["double_charges"] = overcharged
    report.figures["refunds"] = sum(1 for amount in refunded.values() if amount > 0)
    report.figures["ledger_rows"] = len(snap.ledger)


def _payments(
    report: CheckReport,
    snap: Snapshot,
    order_of: Mapping[str, Row],
    charged: Mapping[str, Decimal],
    refunded: Mapping[str, Decimal],
) -> None:
    # what the ledger holds for an order in each payment state
    ledger_for = {
        "CAPTURED": (True, False),
        "REFUNDED": (True, True),
        "DECLINED": (False, False),
        "CANCELLED": (False, False),
    }
    paid = set()
    for p in snap.payments:
        paid.add(p["order_id"])
        o = order_of.get(p["order_id"])
        if o is None:
            continue
        if o["refused"]:
            report.violation(
                f"order {o['id']} was refused at placement but has a payment ({p['status']})"
            )
            continue
        if o["status"] == "CONFIRMED" and p["status"] != "CAPTURED":
            report.violation(f"order {o['id']} is CONFIRMED but its payment is {p['status']}")
        if o["status"] == "REJECTED" and p["status"] == "CAPTURED":
            report.violation(f"order {o['id']} is REJECTED but its payment is still CAPTURED")
        if p["status"] in ("CAPTURED", "REFUNDED") and p["amount"] != o["total"]:
            report.violation(
                f"order {o['id']}: its payment of {p['amount']} is not its total {o['total']}"
            )
        has = (p["order_id"] in charged, p["order_id"] in refunded)
        if p["status"] in ledger_for and has != ledger_for[p["status"]]:
            report.violation(
                f"order {o['id']}: its payment is {p['status']} but the ledger holds "
                f"{'a' if has[0] else 'no'} charge and {'a' if has[1] else 'no'} refund"
            )
    for o in snap.orders:
        if o["status"] == "CONFIRMED" and not o["refused"] and o["id"] not in paid:
            report.violation(f"order {o['id']} is CONFIRMED but has no payment")


# -- stock ---------------------------------------------------------------------------------------


def stock(report: CheckReport, snap: Snapshot, *, allow_pending: bool) -> None:
    """Per SKU: opening - on hand = Σ quantities RESERVED = Σ quantities of CONFIRMED orders;
    never negative. Per order: the reservation's lines are the order's lines; a CONFIRMED order
    holds a reservation, a REJECTED one holds nothing."""
    order_of = snap.order_of()
    order_lines = snap.lines_of()
    status_of = {r["order_id"]: r["status"] for r in snap.reservations}
    reserved_lines: dict[str, Counter[str]] = defaultdict(Counter)
    for line in snap.reservation_lines:
        reserved_lines[line["order_id"]][line["sku"]] += line["quantity"]
    held: Counter[str] = Counter()  # what RESERVED reservations hold, per SKU
    for order_id, lines in reserved_lines.items():
        if status_of.get(order_id) == "RESERVED":
            held.update(lines)
    confirmed_qty: Counter[str] = Counter()
    for o in snap.orders:
        if o["status"] == "CONFIRMED" and not o["refused"]:
            confirmed_qty.update(order_lines.get(o["id"], Counter()))
    skus = set()
    for s in snap.stock:
        skus.add(s["sku"])
        taken = s["opening_on_hand"] - s["on_hand"]
        if s["on_hand"] < 0:
            report.violation(f"SKU {s['sku']} has negative stock {s['on_hand']}")
        if taken != held[s["sku"]]:
            report.violation(
                f"SKU {s['sku']}: {taken} taken from stock but RESERVED reservations hold "
                f"{held[s['sku']]}"
            )
        if not allow_pending and taken != confirmed_qty[s["sku"]]:
            report.violation(
                f"SKU {s['sku']}: {taken} taken but CONFIRMED orders hold {confirmed_qty[s['sku']]}"
            )
    for sku in sorted(set(held) - skus):
        report.violation(f"SKU {sku} is reserved ({held[sku]}) but has no stock row")
    for r in snap.reservations:
        order = order_of.get(r["order_id"])
        if order is None:
            continue  # an orphan: see orphans()
        if order["refused"]:
            report.violation(
                f"order {order['id']} was refused at placement but has a reservation "
                f"({r['status']})"
            )
            continue
        lines, ordered = reserved_lines.get(order["id"], Counter()), order_lines.get(order["id"])
        if (lines or r["status"] == "RESERVED") and lines != (ordered or Counter()):
            report.violation(
                f"order {order['id']}: its {r['status']} reservation lists {_lines_text(lines)} "
                f"but its lines are {_lines_text(ordered or Counter())}"
            )
    for o in snap.orders:
        status = status_of.get(o["id"])
        if o["status"] == "CONFIRMED" and not o["refused"] and status != "RESERVED":
            report.violation(
                f"order {o['id']} is CONFIRMED without a reservation"
                + (f" (it is {status})" if status else "")
            )
        if o["status"] == "REJECTED" and status == "RESERVED":
            report.violation(f"order {o['id']} is REJECTED but still holds stock")


# -- orphans -------------------------------------------------------------------------------------


def orphans(snap: Snapshot) -> list[tuple[str, str]]:
    """(order id, sentence) of payments, ledger rows, reservations and sagas of unknown orders."""
    known = {o["id"] for o in snap.orders}
    kinds: tuple[tuple[Sequence[Row], str, Callable[[Row], str]], ...] = (
        (snap.payments, "order_id", lambda p: f"orphan payment ({p['status']}, {p['amount']})"),
        (
            snap.ledger,
            "order_id",
            lambda e: f"orphan ledger {e['kind']} of {e['amount']} on customer {e['customer_id']}",
        ),
        (snap.reservations, "order_id", lambda r: f"orphan reservation ({r['status']})"),
        (snap.sagas, "id", lambda s: f"orphan saga ({s['status']})"),
    )
    found: list[tuple[str, str]] = []
    for rows, key, what in kinds:
        found += [
            (r[key], f"{what(r)}: order {r[key]} does not exist in order_svc")
            for r in rows
            if r[key] not in known
        ]
    return found


# -- outboxes, inboxes, dead letters -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """An inbox record an effect implies: the saga's command it came from."""

    message_id: str
    order_id: str
    command: str
    effect: str
    at: datetime | None


def expected_inbox(
    snap: Snapshot, command_id: Callable[[str, str, str], str]
) -> dict[str, list[Expected]]:
    """Per service, the inbox records its effects imply. Saga commands carry ids derived from
    the order and the step (``command_id(order_id, kind, step)``), so each payment, reservation
    and terminal order names the commands it was made by; the handler recorded them in the same
    transaction. Refused orders had no saga: no commands."""
    out: dict[str, list[Expected]] = defaultdict(list)
    # service, saga step, what its rows are, action, compensation, their rows, and which
    # states the action (or the compensation) leaves
    participants = (
        ("payment_svc", "payment", "payment", "ProcessPayment", "RefundPayment", snap.payments,
         {"CAPTURED", "DECLINED", "REFUNDED"}, {"REFUNDED", "CANCELLED"}),
        ("inventory_svc", "inventory", "reservation", "ReserveInventory", "ReleaseInventory",
         snap.reservations, {"RESERVED", "FAILED", "RELEASED"}, {"RELEASED", "CANCELLED"}),
    )  # fmt: skip
    for service, step, noun, action, compensation, rows, by_action, by_compensation in participants:
        for row in rows:
            what = f"{row['status']} {noun}"
            if row["status"] in by_action:
                out[service].append(
                    Expected(
                        command_id(row["order_id"], "action", step),
                        row["order_id"],
                        action,
                        what,
                        row["created_at"],
                    )
                )
            if row["status"] in by_compensation:
                out[service].append(
                    Expected(
                        command_id(row["order_id"], "compensation", step),
                        row["order_id"],
                        compensation,
                        what,
                        row["updated_at"],
                    )
                )
    for o in snap.orders:
        if o["refused"] or o["status"] == "PENDING":
            continue
        kind, step, command = (
            ("action", "approval", "ApproveOrder")
            if o["status"] == "CONFIRMED"
            else ("failure", "failure", "RejectOrder")
        )
        out["order_svc"].append(
            Expected(
                command_id(o["id"], kind, step),
                o["id"],
                command,
                f"{o['status']} order",
                o["updated_at"],
            )
        )
    return out


def inbox(
    report: CheckReport,
    service: str,
    rows: Iterable[Row],
    missing: Iterable[Row],
    handled: set[str],
) -> None:
    """``rows`` (consumer, message_type, n) are recorded by the service's own consumer name
    (replicas share it, or a redelivery to another replica is processed twice) for types the
    service handles; ``missing`` are :class:`Expected` records (as dicts) its inbox lacks."""
    for row in rows:
        if row["consumer"] != service:
            report.violation(
                f"{service} inbox: {row['n']} row(s) of {row['message_type']} recorded by "
                f"consumer {row['consumer']!r}, not {service!r}: its duplicates go unnoticed"
            )
        elif row["message_type"] not in handled:
            report.violation(
                f"{service} inbox: {row['n']} row(s) of type {row['message_type']!r}, which "
                f"{service} does not handle"
            )
    for e in missing:
        report.violation(
            f"order {e['order_id']}: {service}'s inbox has no record of the {e['command']} "
            f"({e['message_id']}) its {e['effect']} came from"
        )


def outboxes(
    report: CheckReport, dbs: Mapping[str, Mapping[str, Sequence[Row]]], *, allow_pending: bool
) -> None:
    """Outboxes drained: nothing unpublished (a few named), nothing dead."""
    backlog: dict[str, int] = {}
    for service, tables in dbs.items():
        [row] = tables["outbox"]
        backlog[service] = row["pending"]
        if row["pending"] and not allow_pending:
            examples = ", ".join(
                f"{r['message_type']} for {r['aggregate_type']} {r['aggregate_id']} "
                f"({r['age']} s old)"
                for r in tables["outbox_pending"]
            )
            report.violation(
                f"{service}: {row['pending']} outbox rows not published, e.g. {examples}"
            )
        if row["dead"]:
            examples = ", ".join(
                f"{r['message_type']} for {r['aggregate_type']} {r['aggregate_id']} "
                f"({(r['last_error'] or '')[:100]})"
                for r in tables["outbox_dead"]
            )
            report.violation(
                f"{service}: {row['dead']} outbox rows dead, e.g. {examples} "
                "(see `orderflow dlq list`)"
            )
    report.figures["outbox_pending"] = backlog


def dead_letter_reasons(letters: Iterable[DeadLetter]) -> str:
    """Why dead letters died, most frequent reason first."""
    counts = Counter(
        f"{letter.type or 'untyped'} ("
        + (
            f"{letter.error_class}: {letter.error[:120]}"
            if letter.error_class or letter.error
            else "no reason recorded"
        )
        + ")"
        for letter in letters
    )
    parts = [f"{n} {reason}" for reason, n in counts.most_common(5)]
    if len(counts) > 5:
        parts.append(f"{len(counts) - 5} other reason(s)")
    return "; ".join(parts)
