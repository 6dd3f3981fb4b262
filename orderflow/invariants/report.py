"""The report the invariants write to and the snapshot of the databases they read."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

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
