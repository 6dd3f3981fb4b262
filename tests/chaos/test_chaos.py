"""A short run of every chaos scenario with a fixed seed: nothing lost, nothing charged twice.

Each test also asserts that its faults really happened (kills, crashes at fault points, copies
absorbed, restarts…), so a scenario that silently did nothing fails. `make chaos` runs the long
version (180 s, over 2,000 orders per scenario).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orderflow.chaos.harness import ChaosReport, run_chaos
from orderflow.chaos.poison import KINDS

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
LOGS = Path("var/chaos-tests")


async def short_run(scenario: str, *, duration: float = 10, rate: float = 15) -> ChaosReport:
    report = await run_chaos(
        scenario, duration=duration, rate=rate, seed=20261126, log_path=LOGS / f"{scenario}.log"
    )
    assert report.placed == int(duration * rate)
    assert report.not_placed == 0
    assert report.lost == []
    assert report.charged_twice == 0
    assert report.terminal == report.placed
    assert report.time_to_quiesce is not None
    assert report.violations == [], report.violations
    return report


async def test_kill_storm_loses_nothing() -> None:
    report = await short_run("kill-storm", duration=12)
    assert report.faults["kills"] >= 2


async def test_crashes_at_commit_boundaries_lose_nothing_and_duplicates_are_absorbed() -> None:
    report = await short_run("commit-boundaries")
    assert report.faults["crashes at fault points"] >= 1
    assert report.duplicates_absorbed > 0


async def test_broker_restarts_lose_nothing() -> None:
    report = await short_run("broker-restart", duration=12)
    assert (
        report.faults.get("broker restarts", 0) + report.faults.get("connections dropped", 0) >= 2
    )


async def test_database_restarts_lose_nothing() -> None:
    report = await short_run("database-restart", duration=12)
    assert report.faults["database restarts"] >= 1


async def test_network_faults_lose_nothing() -> None:
    report = await short_run("network-faults")
    assert sum(report.faults.values()) >= 2


async def test_redelivered_duplicates_are_all_absorbed() -> None:
    report = await short_run("duplicates")
    assert report.faults["copies injected"] > 0
    assert report.duplicates_absorbed == report.faults["copies injected"]


async def test_every_bad_message_ends_in_a_dead_letter_queue_and_no_good_one_is_lost() -> None:
    report = await short_run("poison")
    assert report.bad_messages_injected >= len(KINDS) >= 10
    assert report.dead_letters == report.bad_messages_injected
