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

from orderflow.invariants.conservation import money, stock
from orderflow.invariants.messaging import (
    Expected,
    dead_letter_reasons,
    expected_inbox,
    inbox,
    outboxes,
)
from orderflow.invariants.orders import order_totals, orders_and_sagas, orphans
from orderflow.invariants.report import EXPECTED_SAGA, TERMINAL_SAGA, CheckReport, Snapshot

__all__ = [
    "EXPECTED_SAGA",
    "TERMINAL_SAGA",
    "CheckReport",
    "Expected",
    "Snapshot",
    "dead_letter_reasons",
    "expected_inbox",
    "inbox",
    "money",
    "order_totals",
    "orders_and_sagas",
    "orphans",
    "outboxes",
    "stock",
]
