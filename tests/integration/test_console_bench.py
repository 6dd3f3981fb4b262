"""`orderflow bench console` on a small history: it seeds, serves, times every page over HTTP,
and its verdict follows the target."""

from __future__ import annotations

import pytest

from libs.settings import Settings
from orderflow.bench.console import console_bench
from tests.conftest import ADMIN_DSN, AMQP_BASE

pytestmark = pytest.mark.integration


async def test_the_console_benchmark_times_every_page_and_judges_against_its_target() -> None:
    base = Settings(amqp_url=AMQP_BASE + "orderflow", pg_admin_dsn=ADMIN_DSN)
    results = await console_bench(base, sagas=300, letters=60, rounds=5, target_p95_ms=0.01)
    assert len(results["pages"]) >= 12
    assert all(
        0 < page["p50_ms"] <= page["p95_ms"] <= page["max_ms"] for page in results["pages"].values()
    )
    assert results["worst_p95_ms"] > 0.01
    assert results["ok"] is False  # no page answers in 10 µs: the verdict can say "over"
