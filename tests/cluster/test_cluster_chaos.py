"""broker-node-kill, short: the services and the saga on the three-node cluster under steady
orders, the node leading the busiest queues killed and restarted, a node's connections cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.settings import Settings
from orderflow.chaos.harness import run_chaos
from tests.conftest import ADMIN_DSN

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.timeout(300)]


async def test_killing_broker_nodes_under_load_loses_nothing(cluster_url: str) -> None:
    settings = Settings(amqp_url=cluster_url, rabbitmq_node="of1@localhost", pg_admin_dsn=ADMIN_DSN)
    report = await run_chaos(
        "broker-node-kill",
        duration=20,
        rate=8,
        seed=20261127,
        settings=settings,
        log_path=Path("var/chaos-tests/broker-node-kill.log"),
    )
    assert report.placed == 160
    assert report.lost == []
    assert report.charged_twice == 0
    assert report.terminal == report.placed
    assert report.violations == [], report.violations
    for kind, attempts in report.faults_attempted.items():  # every attempt had its effect
        assert report.faults.get(kind, 0) == attempts, (kind, report.fault_log)
    # the run's seconds allow one or two kill-and-restart cycles (make chaos: dozens)
    assert report.faults["broker node kills"] >= 1
    assert report.faults["broker node restarts"] >= report.faults["broker node kills"]
    # after each kill, orders completed again, and that time is reported
    assert report.recovery_after_node_kills_s
    assert all(s is not None for s in report.recovery_after_node_kills_s)
