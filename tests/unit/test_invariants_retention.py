"""`orderflow check` after retention: an order whose saga was pruned (it ended before the saga
horizon) is no violation; one that ended after it still must have its saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from orderflow.invariants import CheckReport, Snapshot, orders_and_sagas


def snapshot(updated_at: datetime) -> Snapshot:
    order = {
        "id": "o-1",
        "customer_id": "alice",
        "status": "CONFIRMED",
        "total": Decimal("5.00"),
        "refused": False,
        "updated_at": updated_at,
    }
    return Snapshot(orders=[order], lines=[], sagas=[])


def test_an_order_older_than_the_saga_horizon_may_have_lost_its_saga() -> None:
    now = datetime.now(UTC)
    report = CheckReport()
    orders_and_sagas(
        report,
        snapshot(now - timedelta(days=8)),
        allow_pending=False,
        retries=2,
        sagas_pruned_before=now - timedelta(days=7),
    )
    assert report.violations == []
    assert report.notes == [
        "1 orders ended before the saga retention horizon have no saga "
        "(ORDERFLOW_RETENTION__SAGAS: retention deletes ended sagas)"
    ]


def test_a_younger_order_without_its_saga_is_still_a_violation() -> None:
    now = datetime.now(UTC)
    report = CheckReport()
    orders_and_sagas(
        report,
        snapshot(now - timedelta(days=6)),
        allow_pending=False,
        retries=2,
        sagas_pruned_before=now - timedelta(days=7),
    )
    assert report.violations == ["order o-1 is CONFIRMED but has no saga"]
