"""Money and stock conserved: per customer, per SKU, per order."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from decimal import Decimal

from orderflow.invariants.report import ZERO, CheckReport, Row, Snapshot, _lines_text


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
