"""`orderflow check` after retention: an order whose saga was pruned (it ended before the saga
horizon) is no violation; one that ended after it still must have its saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

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


@pytest.mark.parametrize(
    ("age_days", "violations", "notes"),
    [
        (8, [], ["1 orders ended before the saga retention horizon have no saga "
                 "(ORDERFLOW_RETENTION__SAGAS: retention deletes ended sagas)"]),
        (6, ["order o-1 is CONFIRMED but has no saga"], []),
    ],
)  # fmt: skip
def test_only_an_order_older_than_the_saga_horizon_may_have_lost_its_saga(
    age_days: int, violations: list[str], notes: list[str]
) -> None:
    now = datetime.now(UTC)
    report = CheckReport()
    orders_and_sagas(
        report,
        snapshot(now - timedelta(days=age_days)),
        allow_pending=False,
        retries=2,
        sagas_pruned_before=now - timedelta(days=7),
    )
    assert report.violations == violations
    assert report.notes == notes
