"""Demo customers and stock that `orderflow setup` seeds, and the prices the CLI offers."""

from __future__ import annotations

from decimal import Decimal

# id, name, opening balance
CUSTOMERS = (
    ("alice", "Alice Archer", Decimal("1000.00")),
    ("bob", "Bob Brown", Decimal("25.00")),
    ("carol", "Carol Chen", Decimal("10000000.00")),
)
# sku, name, unit price, opening stock
CATALOG = (
    ("WIDGET", "Widget", Decimal("9.99"), 1000),
    ("GADGET", "Gadget", Decimal("24.50"), 500),
    ("GIZMO", "Gizmo", Decimal("149.00"), 3),
    ("SPROCKET", "Sprocket", Decimal("2.25"), 10_000_000),
)
PRICES = {sku: price for sku, _, price, _ in CATALOG}
