"""`orderflow check`: verify every invariant of DESIGN.md against the four databases.

- every order is CONFIRMED or REJECTED, and its saga ended the matching way (COMPLETED /
  COMPENSATED); no saga is past its deadline;
- money: per customer, opening - balance = Σ totals of CONFIRMED orders; a CONFIRMED order was
  charged exactly its total once and never refunded; a REJECTED order nets zero;
- stock: per SKU, opening - on hand = Σ quantities of CONFIRMED orders; never negative; a
  CONFIRMED order holds a reservation, a REJECTED one does not;
- outboxes drained: nothing unpublished, nothing dead.
Each violation names the order, customer or SKU it concerns.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from libs.pg.pool import connect
from libs.settings import Settings
from orderflow.system import SERVICES

ZERO = Decimal("0")


@dataclass
class CheckReport:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violation(self, text: str) -> None:
        self.violations.append(text)


async def _fetch(dsn: str, *queries: str) -> list[list[Any]]:
    """Several queries on one connection to one database."""
    conn = await connect(dsn)
    try:
        return [list(await conn.fetch(query)) for query in queries]
    finally:
        await conn.close()


async def check(
    settings: Settings, *, allow_pending: bool = False, deadline_grace: float = 2.0
) -> CheckReport:
    report = CheckReport()
    orders, lines = await _fetch(
        settings.dsn_for("order_svc"),
        "SELECT id::text, customer_id, status, total, reason FROM orders",
        "SELECT order_id::text, sku, quantity FROM order_lines",
    )
    [sagas] = await _fetch(
        settings.dsn_for("saga"),
        f"""SELECT id, status, step,
            deadline_at < clock_timestamp() - interval '{deadline_grace} seconds' AS overdue
            FROM saga_instance WHERE saga = 'order'""",
    )
    customers, ledger = await _fetch(
        settings.dsn_for("payment_svc"),
        "SELECT id, balance, opening_balance FROM customers",
        "SELECT order_id::text, kind, amount FROM ledger",
    )
    stock, reservations = await _fetch(
        settings.dsn_for("inventory_svc"),
        "SELECT sku, on_hand, opening_on_hand FROM stock",
        "SELECT order_id::text, status FROM reservations",
    )

    by_status: dict[str, int] = defaultdict(int)
    for o in orders:
        by_status[o["status"]] += 1
    report.figures["orders"] = dict(by_status)
    report.figures["orders_total"] = len(orders)

    # -- terminal states -----------------------------------------------------------------
    saga_of = {s["id"]: s for s in sagas}
    expected_saga = {"CONFIRMED": "COMPLETED", "REJECTED": "COMPENSATED"}
    for o in orders:
        s = saga_of.get(o["id"])
        if o["status"] == "PENDING":
            if not allow_pending:
                report.violation(
                    f"order {o['id']} is still PENDING (saga: {s['status'] if s else 'none'})"
                )
            continue
        if s is None:
            report.violation(f"order {o['id']} is {o['status']} but has no saga")
        elif s["status"] != expected_saga[o["status"]]:
            report.violation(f"order {o['id']} is {o['status']} but its saga is {s['status']}")
    for s in sagas:
        if s["overdue"] and not allow_pending:
            report.violation(
                f"saga {s['id']} is {s['status']} at step {s['step']} past its deadline"
            )
    order_ids = {o["id"] for o in orders}
    for s in sagas:
        if s["id"] not in order_ids:
            report.violation(f"saga {s['id']} has no order")

    # -- money ---------------------------------------------------------------------------
    charges: dict[str, list[Decimal]] = defaultdict(list)
    refunds: dict[str, list[Decimal]] = defaultdict(list)
    for entry in ledger:
        (charges if entry["kind"] == "charge" else refunds)[entry["order_id"]].append(
            entry["amount"]
        )
    confirmed_total: dict[str, Decimal] = defaultdict(lambda: ZERO)
    terminal = [o for o in orders if o["status"] != "PENDING"]
    for o in terminal:
        charged, refunded = charges.get(o["id"], []), refunds.get(o["id"], [])
        if len(charged) > 1:
            report.violation(f"order {o['id']} was charged {len(charged)} times")
        if o["status"] == "CONFIRMED":
            confirmed_total[o["customer_id"]] += o["total"]
            if sum(charged, ZERO) != o["total"] or refunded:
                report.violation(
                    f"order {o['id']} is CONFIRMED but charged {sum(charged, ZERO)} "
                    f"and refunded {sum(refunded, ZERO)} for a total of {o['total']}"
                )
        elif sum(charged, ZERO) != sum(refunded, ZERO):
            report.violation(
                f"order {o['id']} is REJECTED but nets {sum(charged, ZERO) - sum(refunded, ZERO)}"
            )
    report.figures["double_charges"] = sum(1 for c in charges.values() if len(c) > 1)
    report.figures["refunds"] = sum(1 for r in refunds.values() if r and sum(r, ZERO) > 0)
    if not allow_pending:
        for c in customers:
            spent = c["opening_balance"] - c["balance"]
            if spent != confirmed_total.get(c["id"], ZERO):
                report.violation(
                    f"customer {c['id']} spent {spent} but CONFIRMED orders total "
                    f"{confirmed_total.get(c['id'], ZERO)}"
                )
            if c["balance"] < 0:
                report.violation(f"customer {c['id']} has a negative balance {c['balance']}")

    # -- stock ---------------------------------------------------------------------------
    status_of = {o["id"]: o["status"] for o in orders}
    confirmed_qty: dict[str, int] = defaultdict(int)
    for line in lines:
        if status_of.get(line["order_id"]) == "CONFIRMED":
            confirmed_qty[line["sku"]] += line["quantity"]
    for s in stock:
        if s["on_hand"] < 0:
            report.violation(f"SKU {s['sku']} has negative stock {s['on_hand']}")
        if not allow_pending and s["opening_on_hand"] - s["on_hand"] != confirmed_qty.get(
            s["sku"], 0
        ):
            report.violation(
                f"SKU {s['sku']}: {s['opening_on_hand'] - s['on_hand']} taken but CONFIRMED "
                f"orders hold {confirmed_qty.get(s['sku'], 0)}"
            )
    held = {r["order_id"] for r in reservations if r["status"] == "RESERVED"}
    for o in terminal:
        if o["status"] == "CONFIRMED" and o["id"] not in held:
            report.violation(f"order {o['id']} is CONFIRMED without a reservation")
        if o["status"] == "REJECTED" and o["id"] in held:
            report.violation(f"order {o['id']} is REJECTED but still holds stock")

    # -- outboxes ------------------------------------------------------------------------
    backlog: dict[str, int] = {}
    for service in SERVICES:
        [[row]] = await _fetch(
            settings.dsn_for(service),
            """SELECT
            count(*) FILTER (WHERE published_at IS NULL AND dead_at IS NULL) AS pending,
            count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead FROM outbox""",
        )
        backlog[service] = row["pending"]
        if row["pending"] and not allow_pending:
            report.violation(f"{service}: {row['pending']} outbox rows not published")
        if row["dead"]:
            report.violation(
                f"{service}: {row['dead']} outbox rows dead (see `orderflow dlq list`)"
            )
    report.figures["outbox_pending"] = backlog
    return report
