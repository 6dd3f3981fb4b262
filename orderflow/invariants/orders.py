"""Orders and their sagas: terminal, matching, totals that add up, no orphans."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal

from orderflow.invariants.report import (
    EXPECTED_SAGA,
    TERMINAL_SAGA,
    ZERO,
    CheckReport,
    Row,
    Snapshot,
)


def orders_and_sagas(
    report: CheckReport,
    snap: Snapshot,
    *,
    allow_pending: bool,
    retries: int,
    sagas_pruned_before: datetime | None = None,
) -> None:
    """Every order terminal with exactly one saga that ended the matching way — except refused
    orders, which have none, and orders that ended before ``sagas_pruned_before``, whose saga
    retention may have deleted; no saga past its deadline or re-sending beyond the retry
    policy."""
    # one saga per order (the primary key) and a refused order REJECTED with total 0 (a CHECK)
    # are the schema's to keep; what it cannot keep is checked here
    saga_of = {s["id"]: s for s in snap.sagas}
    pruned = 0
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
            if sagas_pruned_before is not None and o["updated_at"] < sagas_pruned_before:
                pruned += 1  # said in a note below, never hidden
            else:
                report.violation(f"order {o['id']} is {o['status']} but has no saga")
        elif s["status"] != EXPECTED_SAGA[o["status"]] and (
            s["status"] in TERMINAL_SAGA or not allow_pending
        ):
            report.violation(f"order {o['id']} is {o['status']} but its saga is {s['status']}")
    if pruned:
        report.note(
            f"{pruned} orders ended before the saga retention horizon have no saga "
            "(ORDERFLOW_RETENTION__SAGAS: retention deletes ended sagas)"
        )
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
