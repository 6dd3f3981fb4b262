"""The chaos harness counts faults by their effects: each check fails when the effect is missing.

No broker, no database: the checks are fed what a run would have seen (and a few real local
processes and sockets), and a scenario step is run against stand-ins that do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orderflow.chaos import infrastructure, scenarios, verify
from orderflow.chaos.proxy import TcpProxy
from orderflow.chaos.verify import BrokerInstance, CommandFailed, FaultLedger

ROOT = Path(__file__).resolve().parents[2]


# -- the ledger -----------------------------------------------------------------------------


def test_a_missed_fault_is_a_violation_naming_it() -> None:
    ledger = FaultLedger()
    n = ledger.attempt("broker restarts")
    ledger.miss("broker restarts", "the broker did not restart", n)
    assert ledger.violations() == [
        "fault did not happen: broker restarts #1: the broker did not restart"
    ]


def test_an_attempt_neither_observed_nor_explained_is_a_violation() -> None:
    ledger = FaultLedger()
    ledger.attempt("kills")
    ledger.attempt("kills")
    ledger.saw("kills")
    (violation,) = ledger.violations()
    assert "kills: 2 attempted, 1 observed" in violation


def test_a_required_fault_never_observed_is_a_violation() -> None:
    ledger = FaultLedger()
    ledger.saw("kills of service processes")
    (violation,) = ledger.violations(
        ["kills of service processes", "kills of relay-only processes"]
    )
    assert violation.startswith("no kills of relay-only processes observed")


def test_faults_that_all_happened_are_no_violation() -> None:
    ledger = FaultLedger()
    for _ in range(3):
        ledger.attempt("database restarts")
        ledger.saw("database restarts")
    assert ledger.violations(["database restarts"]) == []


# -- commands -------------------------------------------------------------------------------


async def test_a_failing_command_raises_with_its_exit_code_and_output() -> None:
    with pytest.raises(CommandFailed, match=r"exited with code 3: oops"):
        await verify.cmd(sys.executable, "-c", "import sys; print('oops'); sys.exit(3)")
    assert await verify.cmd(sys.executable, "-c", "print('fine')") == "fine"


# -- broker and database restarts -----------------------------------------------------------


def test_a_broker_restart_whose_instance_did_not_change_fails() -> None:
    same = BrokerInstance(os_pid=2945, app="<0.3453.0>", vm_started=1795773815)
    assert "did not restart" in (verify.broker_restart_problem(same, same) or "")


def test_a_broker_that_is_not_back_fails() -> None:
    before = BrokerInstance(2945, "<0.3453.0>", 1795773815)
    after = BrokerInstance(2945, None, 1795773815)
    assert "not back" in (verify.broker_restart_problem(before, after) or "")


def test_a_broker_restart_is_a_new_application_instance_or_a_new_node_process() -> None:
    before = BrokerInstance(2945, "<0.3453.0>", 1795773815)
    assert verify.broker_restart_problem(before, BrokerInstance(2945, "<0.9100.0>", 0)) is None
    assert verify.broker_restart_problem(before, BrokerInstance(7001, "<0.3453.0>", 0)) is None


def test_the_broker_probe_answer_is_parsed() -> None:
    assert verify.parse_broker_instance('"2945 <0.3453.0> 1795773815"\n') == BrokerInstance(
        2945, "<0.3453.0>", 1795773815
    )
    assert verify.parse_broker_instance('"2945 undefined 1795773815"').app is None
    with pytest.raises(CommandFailed):
        verify.parse_broker_instance("Error: unable to perform an operation on node")


def test_dropped_connections_must_all_be_gone() -> None:
    assert verify.connections_dropped_problem({"<a>", "<b>"}, {"<b>", "<c>"}) == (
        "1 of 2 connections survived the drop"
    )
    assert verify.connections_dropped_problem(set(), set()) == "there was no connection to drop"
    assert verify.connections_dropped_problem({"<a>", "<b>"}, {"<c>"}) is None


def test_a_database_restart_whose_start_time_did_not_change_fails() -> None:
    started = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert "did not change" in (verify.database_restart_problem(started, started) or "")
    assert verify.database_restart_problem(started, started + timedelta(seconds=3)) is None


# -- kills and restarts ---------------------------------------------------------------------


def test_a_kill_whose_pid_is_still_alive_fails() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert verify.pid_alive(proc.pid)
        assert verify.kill_problem(proc.pid, proc.returncode) == f"pid {proc.pid} is still alive"
    finally:
        proc.kill()
        proc.wait()
    assert not verify.pid_alive(proc.pid)
    assert verify.kill_problem(proc.pid, proc.returncode, signal.SIGKILL) is None


def test_a_process_that_ended_otherwise_was_not_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert "not by signal SIGKILL" in (verify.kill_problem(proc.pid, proc.returncode) or "")


def test_a_restart_needs_a_new_ready_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert verify.restart_problem(1, None, ready=False) == "no process was started after pid 1"
        assert "killed one's pid" in (verify.restart_problem(proc.pid, proc.pid, ready=True) or "")
        assert "did not become ready" in (verify.restart_problem(1, proc.pid, ready=False) or "")
        assert verify.restart_problem(1, proc.pid, ready=True) is None
    finally:
        proc.kill()
        proc.wait()


class _Process:
    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None


class _Child:
    name, role = "payment_svc-relay#1", "relay"

    def __init__(self, pid: int) -> None:
        self.process = _Process(pid)


class _DudSupervisor:
    """Says it killed the child and did nothing."""

    async def kill(self, child: Any, sig: int) -> None:
        return None


def _context(supervisor: Any = None) -> scenarios.Context:
    return scenarios.Context(supervisor, random.Random(1), 0.0, connection=None)  # type: ignore[arg-type]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield proc
    proc.kill()
    proc.wait()


async def test_the_kill_storm_reports_a_kill_that_left_the_process_alive(
    sleeper: subprocess.Popen[bytes],
) -> None:
    proc = sleeper
    ctx = _context(_DudSupervisor())
    pid = await scenarios.KillStorm()._kill(ctx, _Child(proc.pid))  # type: ignore[arg-type]
    assert pid is None
    assert ctx.faults.observed["kills"] == 0
    assert ctx.faults.violations(scenarios.KillStorm.required)[0] == (
        f"fault did not happen: kills #1: payment_svc-relay#1: pid {proc.pid} is still alive"
    )


async def test_the_broker_scenario_reports_a_restart_that_did_not_happen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def nothing(*args: str, timeout: float = 0) -> str:
        return ""

    async def same() -> BrokerInstance:
        return BrokerInstance(2945, "<0.3453.0>", 1795773815)

    async def no_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr(infrastructure, "cmd", nothing)
    monkeypatch.setattr(verify, "broker_instance", same)
    monkeypatch.setattr("orderflow.chaos.infrastructure.asyncio.sleep", no_sleep)
    ctx = _context()
    await scenarios.BrokerRestart()._restart(ctx)
    assert ctx.faults.observed["broker restarts"] == 0
    violations = ctx.faults.violations(["broker restarts"])
    assert violations[0].startswith("fault did not happen: broker restarts #1: ")
    assert "did not restart" in violations[0]


async def test_the_broker_scenario_injects_each_fault_once_even_when_the_window_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow machine can spend a short window on the first drop: the restart still comes."""
    done: list[str] = []

    async def drop(ctx: Any, vhost: str) -> None:
        done.append("drop")

    async def restart(ctx: Any) -> None:
        done.append("restart")

    scenario = scenarios.BrokerRestart()
    monkeypatch.setattr(scenario, "_drop", drop)
    monkeypatch.setattr(scenario, "_restart", restart)
    monkeypatch.setattr("orderflow.chaos.infrastructure.shutil.which", lambda name: name)
    ctx = _context()  # stop_at 0: the window closed before the first fault
    ctx.extra["env"] = {"ORDERFLOW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/ofchaos_1"}
    await scenario.inject(ctx)
    assert done == ["drop", "restart"]


async def test_the_network_scenario_cuts_each_proxy_once_even_when_the_window_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done: list[str] = []

    async def fault(ctx: Any, name: str, kind: str) -> None:
        done.append(f"{kind} on {name}")

    scenario = scenarios.NetworkFaults()
    monkeypatch.setattr(scenario, "_fault", fault)
    await scenario.inject(_context())
    assert [d.split(" on ")[1] for d in done] == ["amqp", "pg"]
    assert all(d.split(" on ")[0] in ("reset", "blackhole") for d in done)


# -- duplicates -----------------------------------------------------------------------------


def test_duplicates_are_read_from_the_log_records_redeliveries_apart() -> None:
    records = [
        {"event": "consumer.duplicate", "message_id": "m1", "redelivered": False},
        {"event": "consumer.duplicate", "message_id": "m1"},
        {"event": "consumer.duplicate", "message_id": "m2", "redelivered": True},
        {"event": "consumer.handled", "message_id": "m3"},
        {"event": "relay.publish_failed", "unanswered_ids": ["m4", "m5"], "failed": 0},
        {"event": "relay.publish_failed", "failed": 1},
    ]
    absorbed, redelivered, republished = verify.absorbed_duplicates(records)
    assert absorbed == Counter({"m1": 2})
    assert redelivered == 1
    assert republished == Counter({"m4": 1, "m5": 1})


def test_an_absorbed_duplicate_nobody_injected_or_re_sent_is_reported() -> None:
    absorbed = Counter({"copy-1": 1, "resent-1": 2, "late-1": 1, "twice-1": 2})
    problems = verify.unexplained_duplicates(
        absorbed,
        copied=["copy-1", "twice-1"],
        uncertain=["late-1"],
        resent=Counter({"resent-1": 2}),
    )
    assert problems == [
        "message twice-1 was absorbed as a duplicate 2 times but only 1 copies of it were "
        "injected or re-sent: something published it again"
    ]
    absorbed["stray-1"] += 1
    assert (
        len(
            verify.unexplained_duplicates(
                absorbed,
                copied=["copy-1", "twice-1", "twice-1"],
                uncertain=["late-1"],
                resent=Counter({"resent-1": 2}),
            )
        )
        == 1
    )
    assert verify.unexplained_duplicates(Counter({"copy-1": 1}), copied=["copy-1", "copy-1"]) == []


# -- crashes at fault points ----------------------------------------------------------------


def test_a_fault_point_writes_its_marker_and_exits_137() -> None:
    code = "from libs.faults import Faults; Faults({'relay.after_publish': 1.0}).point('relay.after_publish')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 137
    assert done.stderr.startswith("fault.fired point=relay.after_publish pid=")


LOG = """\
order_svc#1     | {"event":"service.started"}
order_svc#1     | fault.fired point=consumer.after_commit pid=101
order_svc#1     | order_svc ready
saga-relay#1| fault.fired point=relay.after_publish pid=102
payment_svc#1   | {"event":"fault.fired point=relay.after_publish"}
"""


def test_crashes_are_counted_from_markers_matched_by_exit_codes() -> None:
    fired = verify.fired_points(LOG)
    assert fired == {
        "order_svc#1": Counter({"consumer.after_commit": 1}),
        "saga-relay#1": Counter({"relay.after_publish": 1}),
    }
    observed, problems = verify.crash_problems(
        fired, {"order_svc#1": [137, 0], "saga-relay#1": [137], "payment_svc#1": [0]}
    )
    assert problems == []
    assert observed == Counter({"consumer.after_commit": 1, "relay.after_publish": 1})


def test_a_crash_without_its_marker_or_a_marker_without_its_crash_fails() -> None:
    fired = verify.fired_points(LOG)
    observed, problems = verify.crash_problems(
        fired, {"order_svc#1": [0], "saga-relay#1": [137], "payment_svc#1": [137]}
    )
    assert observed == Counter({"relay.after_publish": 1})
    assert problems == [
        "order_svc#1 said it crashed at a fault point 1 times but exited with code 137 only 0 times",
        "payment_svc#1 exited with code 137 1 times but said it crashed at a fault point only 0 times",
    ]


# -- the proxies ----------------------------------------------------------------------------


def test_a_proxy_that_carried_nothing_or_cut_nothing_fails() -> None:
    assert verify.proxy_problems("amqp", carried=0, cut=0) == [
        "no traffic went through the amqp proxy (0 connections carried)",
        "the amqp proxy cut no connection (none reset, none blackholed)",
    ]
    assert verify.proxy_problems("pg", carried=12, cut=3) == []


def test_a_service_that_bypasses_the_proxy_fails() -> None:
    problems = verify.routing_problems(
        "the database",
        {"order_svc": [40001, 40002], "saga": [5999], "payment_svc": []},
        {40001, 40002},
    )
    assert problems == [
        "payment_svc has no connection to the database",
        "saga reaches the database directly, not through the proxy (peer ports [5999])",
    ]


def test_a_url_is_pointed_at_the_proxy_or_refused() -> None:
    url = "amqp://user:secret@127.0.0.1:5672/ofchaos_1"
    assert infrastructure._via(url, 40123) == "amqp://user:secret@127.0.0.1:40123/ofchaos_1"
    with pytest.raises(ValueError, match="loopback"):
        infrastructure._via("amqp://user:secret@broker.example:5672/v", 40123)
    with pytest.raises(ValueError, match="port"):
        infrastructure._via("postgresql://u@127.0.0.1/db", 40123)


async def test_the_proxy_counts_what_it_carried_and_cut() -> None:
    peers: list[int] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[1])
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await TcpProxy(target_host="127.0.0.1", target_port=port).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
        assert proxy.connections == 1
        assert set(peers) == proxy.upstream_ports  # what the target sees comes from the proxy

        proxy.blackhole(True)
        writer.write(b"held")
        while proxy.blackholed == 0:
            await asyncio.sleep(0.01)
        proxy.blackhole(False)
        assert await asyncio.wait_for(reader.read(4), 5) == b"held"

        proxy.latency = 0.01
        writer.write(b"slow")
        assert await asyncio.wait_for(reader.read(4), 5) == b"slow"
        assert proxy.delayed >= 1
        proxy.heal()

        assert await proxy.wait_open(1)
        assert proxy.reset_all() == 1
        assert proxy.resets == 1
        with contextlib.suppress(ConnectionError):  # RST: reset, or end of stream
            assert await asyncio.wait_for(reader.read(4), 5) == b""
        writer.close()
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()
