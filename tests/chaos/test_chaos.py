"""A short run of every chaos scenario with a fixed seed: nothing lost, nothing charged twice.

Each test also asserts that its faults really happened, counted by their effects, not by the
attempts (orderflow.chaos.verify): pids gone and new ones ready, the broker's application a new
instance, the postmaster's start time moved, markers of fault points matched by exit codes,
connections carried and cut by the proxies. A scenario that silently did nothing fails. `make
chaos` runs the long version (180 s, over 2,000 orders per scenario).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orderflow.chaos.harness import ChaosReport, run_chaos
from orderflow.chaos.poison import KINDS
from orderflow.hostile import CORPUS

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]
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
    for kind, attempts in report.faults_attempted.items():  # every attempt had its effect
        assert report.faults.get(kind, 0) == attempts, (kind, report.fault_log)
    return report


async def test_kill_storm_loses_nothing() -> None:
    report = await short_run("kill-storm", duration=12)
    assert report.faults["kills"] >= 2
    assert report.faults["restarts"] >= 1
    assert report.faults["kills of service processes"] > 0
    assert report.faults["kills of relay-only processes"] > 0


async def test_three_replicas_of_every_service_racing_on_each_order_lose_nothing() -> None:
    """Issue #12: three processes of each service (the saga too) and two standalone relays
    each, batch and one-message modes side by side, short step deadlines, a kill storm over
    them all. short_run asserts nothing lost, every order ended, and `orderflow check` (money
    and stock conserved per customer and per order) clean."""
    report = await short_run("replicas", duration=12, rate=15)
    assert report.faults["queues consumed by every replica"] == 4
    # replicas #1 and #3 of each service run batches with 3 and 2 workers, #2 one message each
    assert report.faults["starts in batch mode with several workers"] >= 8
    assert report.faults["starts in one-message mode"] >= 4
    assert report.faults["services with two relay-only processes"] == 4
    assert report.faults["kills of saga replicas"] > 0
    assert report.faults["kills of relay-only processes"] > 0
    # the races: re-sends, steps given up on their deadlines, and first commands handled after
    # the saga had given up on them (their replies ignored)
    assert report.faults["commands re-sent by the saga"] > 0
    assert report.faults["steps given up after their deadlines"] > 0
    assert report.faults["replies to a first command after the saga gave up on it"] > 0
    assert report.confirmed > 0


async def test_crashes_at_commit_boundaries_lose_nothing_and_duplicates_are_absorbed() -> None:
    report = await short_run("commit-boundaries")
    assert report.faults["crashes at fault points"] >= 1
    assert report.faults["crashes at fault points"] == report.faults.get(
        "crashes at consumer.after_commit", 0
    ) + report.faults.get("crashes at relay.after_publish", 0)
    assert report.duplicates_absorbed > 0


async def test_broker_restarts_lose_nothing() -> None:
    report = await short_run("broker-restart", duration=12)
    assert report.faults["broker restarts"] >= 1
    assert report.faults["connections dropped"] >= 1
    assert report.faults["broker connections cut"] > 0


async def test_database_restarts_lose_nothing() -> None:
    report = await short_run("database-restart", duration=12)
    assert report.faults["database restarts"] >= 1


async def test_network_faults_lose_nothing() -> None:
    report = await short_run("network-faults")
    for proxy in ("amqp", "pg"):
        assert report.faults[f"connections carried by the {proxy} proxy"] > 0
        cut = report.faults[f"connections reset by the {proxy} proxy"]
        assert cut + report.faults[f"connections blackholed by the {proxy} proxy"] > 0
    assert report.faults["service connections to the broker via the proxy"] > 0
    assert report.faults["service connections to the database via the proxy"] > 0


async def test_redelivered_duplicates_are_all_absorbed() -> None:
    report = await short_run("duplicates")
    assert report.faults["copies injected"] > 0
    # counted in the logs: every copy absorbed, and nothing else absorbed but the saga's own
    # re-sends, copies whose confirm never came and the broker's redeliveries (each
    # unexplained one is a violation)
    copies = report.faults["copies injected"]
    assert copies <= report.duplicates_absorbed
    assert report.duplicates_absorbed <= (
        copies + report.saga_resends + report.uncertain_copies + report.redelivered_duplicates
    )


async def test_every_bad_message_ends_in_a_dead_letter_queue_and_no_good_one_is_lost() -> None:
    report = await short_run("poison")
    assert report.bad_messages_injected >= len(KINDS) >= 10
    # observed by effect: each one's dead letter with its reason, or its refusal stored
    assert report.faults["bad messages injected"] == report.bad_messages_injected
    assert report.answered > 0
    assert report.dead_letters == report.bad_messages_injected - report.answered


async def test_hostile_clients_among_the_orders_are_each_answered_or_dead_lettered() -> None:
    """Every kind of the hostile corpus, from a client's own account, among 150 good orders:
    each ends as the corpus says, every good order ends, no service exits (short_run asserts
    report.ok, which holds a restart as a violation in this scenario)."""
    report = await short_run("hostile-clients")
    assert report.bad_messages_injected >= len(CORPUS)
    assert report.faults["bad messages injected"] == report.bad_messages_injected
    assert report.answered > 0
    assert report.dead_letters == report.bad_messages_injected - report.answered
