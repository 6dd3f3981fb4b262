"""`orderflow load`: a reproducible mix of orders at a steady rate, followed to their ends.

The mix is apportioned exactly (100 orders at 80/10/10 are 80, 10 and 10) and shuffled by
``random.Random(seed)``: the same seed gives the same sequence of kinds and quantities. Order ids are fresh each run, so a second run places new orders.
Each kind has an outcome the demo data makes certain (orders send no price: they are charged the
catalog's, 2.25 a sprocket, 24.50 a gadget and 149.00 a gizmo as seeded):

- ``ok``: carol (a large balance) buys sprockets (plenty of stock) → CONFIRMED;
- ``declined``: bob (25.00) buys 2 gadgets (49.00) → REJECTED by payment, nothing charged;
- ``out-of-stock``: carol buys 10 gizmos (3 in stock) → charged, REJECTED by inventory, refunded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from orderflow.bench.stats import percentile
from orderflow.client import OrderClient

KINDS = ("ok", "declined", "out-of-stock")
EXPECTED = {"ok": "CONFIRMED", "declined": "REJECTED", "out-of-stock": "REJECTED"}


class BadMix(ValueError):
    pass


def parse_mix(text: str) -> dict[str, int]:
    """``ok=80,declined=10,out-of-stock=10`` → weights; every kind must be known."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name not in KINDS:
            raise BadMix(f"unknown order kind {name!r} in --mix; kinds are {', '.join(KINDS)}")
        if not value.isdigit():
            raise BadMix(f"{part!r} in --mix: the weight must be a whole number, e.g. {name}=10")
        weights[name] = int(value)
    if sum(weights.values()) == 0:
        raise BadMix("--mix weights add up to zero")
    return weights


@dataclass(frozen=True)
class PlannedOrder:
    kind: str
    customer: str
    items: tuple[tuple[str, int, Decimal | None], ...]  # no price: the catalog's


def apportion(orders: int, mix: dict[str, int]) -> dict[str, int]:
    """Exact counts per kind for ``orders`` (largest remainder): 100 at 80/10/10 is 80, 10, 10."""
    total = sum(mix.values())
    exact = {k: orders * w / total for k, w in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(mix, key=lambda k: exact[k] - counts[k], reverse=True)
    for kind in by_remainder[: orders - sum(counts.values())]:
        counts[kind] += 1
    return counts


def plan(orders: int, mix: dict[str, int], seed: int) -> list[PlannedOrder]:
    """The orders to place: the mix's exact shares, in an order shuffled by ``seed``."""
    rng = random.Random(seed)
    kinds = [k for k, n in apportion(orders, mix).items() for _ in range(n)]
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        if kind == "ok":
            out.append(PlannedOrder(kind, "carol", (("SPROCKET", rng.randint(1, 3), None),)))
        elif kind == "declined":
            out.append(PlannedOrder(kind, "bob", (("GADGET", 2, None),)))
        else:
            out.append(PlannedOrder(kind, "carol", (("GIZMO", 10, None),)))
    return out


@dataclass
class LoadResult:
    planned: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    placing_seconds: float = 0.0
    total_seconds: float = 0.0

    def latency(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def run_load(
    client: OrderClient,
    orders: list[PlannedOrder],
    *,
    rate: float,
    timeout: float,
    on_placed: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> LoadResult:
    result = LoadResult(planned=Counter(o.kind for o in orders))
    kind_of: dict[str, str] = {}
    started = time.monotonic()
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = started
    for n, order in enumerate(orders):
        outcome = await client.place(customer_id=order.customer, items=list(order.items))
        kind_of[outcome.order_id] = order.kind
        result.order_ids.append(outcome.order_id)
        if on_placed:
            on_placed(n + 1)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    result.placing_seconds = time.monotonic() - started
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(client.outcomes[o].status != "PENDING" for o in result.order_ids)
        if on_done:
            on_done(done)
        if done == len(result.order_ids):
            break
        await asyncio.sleep(0.2)
    result.total_seconds = time.monotonic() - started
    for order_id in result.order_ids:
        outcome = client.outcomes[order_id]
        kind = kind_of[order_id]
        result.outcomes[(kind, outcome.status)] += 1
        if outcome.status == "PENDING":
            result.pending.append(order_id)
        elif outcome.status != EXPECTED[kind]:
            result.unexpected.append(order_id)
        if outcome.latency_ms is not None:
            result.latencies_ms.append(outcome.latency_ms)
    return result
