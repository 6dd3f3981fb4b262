"""Demo customers, catalog prices and stock that `orderflow setup` seeds.

The prices seed order_svc's catalog (never overwriting a price an operator changed); after that
the catalog, not this file, is what orders are charged (`orderflow catalog list`).
"""

from __future__ import annotations

from decimal import Decimal

# id, name, opening balance
CUSTOMERS = (
    ("alice", "Alice Archer", Decimal("1000.00")),
    ("bob", "Bob Brown", Decimal("25.00")),
    ("carol", "Carol Chen", Decimal("10000000.00")),
)
# sku, name, unit price (the catalog's seed), opening stock
CATALOG = (
    ("WIDGET", "Widget", Decimal("9.99"), 1000),
    ("GADGET", "Gadget", Decimal("24.50"), 500),
    ("GIZMO", "Gizmo", Decimal("149.00"), 3),
    ("SPROCKET", "Sprocket", Decimal("2.25"), 10_000_000),
)
PRICES = {sku: price for sku, _, price, _ in CATALOG}
"""The seeded prices (what the catalog holds until an operator changes one)."""
