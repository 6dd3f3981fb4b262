"""The soak benchmark's judgement: flat tables pass, a table that keeps growing fails."""

from __future__ import annotations

from typing import Any

from orderflow.bench.soak import verdict


def samples(
    outbox: list[int], *, rss: float = 100.0, saga_db: int = 10 * 2**20
) -> list[dict[str, Any]]:
    return [
        {
            "at": float(i * 10),
            "rows": {"order_svc": {"outbox": n, "inbox": 100, "orders": 50 * i}},
            "db_bytes": {"saga": saga_db},
            "rss_mib": {"order_svc#1": rss},
        }
        for i, n in enumerate(outbox)
    ]


def test_flat_pruned_tables_pass_and_business_tables_may_grow() -> None:
    flat = samples([0, 400, 500, 480, 510, 490, 505, 495, 500, 500, 490, 505])
    assert verdict(flat, started=0.0, catch_up=20.0, rate=10, round_s=5) == []


def test_a_pruned_table_that_keeps_growing_is_reported() -> None:
    growing = samples([0, 400, 800, 1200, 1600, 2000, 2400, 2800, 3200, 3600, 4000, 4400])
    problems = verdict(growing, started=0.0, catch_up=20.0, rate=10, round_s=5)
    assert problems and "order_svc.outbox grew" in problems[0]


def test_growing_memory_is_reported() -> None:
    data = samples([500] * 12)
    for i, s in enumerate(data):
        s["rss_mib"]["order_svc#1"] = 100.0 + 10 * i
    problems = verdict(data, started=0.0, catch_up=20.0, rate=10, round_s=5)
    assert problems and "resident memory grew" in problems[0]


def test_a_run_too_short_to_judge_says_so() -> None:
    assert verdict(samples([0, 1]), started=0.0, catch_up=20.0, rate=10, round_s=5)[0].startswith(
        "too short"
    )


def test_a_saga_database_that_keeps_growing_is_reported_on_a_long_run() -> None:
    data = [
        {
            "at": float(i * 30),
            "rows": {"saga": {"outbox": 10, "inbox": 10}},
            "db_bytes": {"saga": (10 + 5 * i) * 2**20},
            "rss_mib": {"saga#1": 100.0},
        }
        for i in range(20)
    ]
    problems = verdict(data, started=0.0, catch_up=30.0, rate=10, round_s=5)
    assert problems and "the saga database grew" in problems[0]
    # a server without autovacuum never reuses the space: the size is not judged there
    assert verdict(data, started=0.0, catch_up=30.0, rate=10, round_s=5, autovacuum=False) == []
    for s in data:
        s["db_bytes"]["saga"] = 30 * 2**20
    assert verdict(data, started=0.0, catch_up=30.0, rate=10, round_s=5) == []
