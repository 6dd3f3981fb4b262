"""A short soak: steady orders with short retention horizons; the pruned tables, the saga
database and memory stay flat once retention caught up (`orderflow bench soak` runs it long)."""

from __future__ import annotations

import io

import pytest

from libs.settings import Settings
from orderflow.bench.soak import soak

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(240)
async def test_a_short_soak_stays_flat_after_retention_catches_up() -> None:
    results = await soak(
        Settings(), rate=20, seconds=32, horizon=5, sample_every=2, log=io.StringIO()
    )
    assert results["problems"] == [], results["problems"]
    assert results["confirmed"] == results["orders"] > 500
    last = results["samples"][-1]["rows"]
    # retention really ran: far fewer inbox rows than messages handled
    assert last["saga"]["inbox"] < results["orders"] * 6 // 2
