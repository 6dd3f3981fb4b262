"""How the chaos harness checks relay-only processes, replicas and their consumer modes."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

from orderflow.chaos import harness, scenarios, verify
from orderflow.supervisor import Child
from tests.unit.test_chaos_verify import _Process

# -- relay-only processes in the kill storm ------------------------------------------------


def _children() -> list[Child]:
    return [Child(service, 1) for service in scenarios.SERVICES]


def test_relays_add_a_relay_only_process_per_service_and_switch_the_services_relays_off() -> None:
    supervisor = SimpleNamespace(children=_children())
    harness._add_relays(supervisor)  # type: ignore[arg-type]
    assert [(c.name, c.env[harness.RELAY_MODE]) for c in supervisor.children] == [
        ("order_svc#1", "off"),
        ("payment_svc#1", "off"),
        ("inventory_svc#1", "off"),
        ("saga#1", "off"),
        ("order_svc-relay#1", "only"),
        ("payment_svc-relay#1", "only"),
        ("inventory_svc-relay#1", "only"),
        ("saga-relay#1", "only"),
    ]


async def test_the_kill_storm_takes_turns_between_service_and_relay_only_processes() -> None:
    supervisor = SimpleNamespace(children=_children())
    harness._add_relays(supervisor)  # type: ignore[arg-type]
    for child in supervisor.children:
        child.process = _Process(0)
        child.ready.set()
    victims: list[str] = []
    turns = iter([True] * 6 + [False])

    class Recording(scenarios.KillStorm):
        async def _kill(self, ctx: scenarios.Context, victim: Child) -> int | None:
            victims.append(victim.role or "service")
            return None

    class Turns(scenarios.Context):
        async def pause(self, low: float, high: float) -> bool:
            return next(turns)

    ctx = Turns(supervisor, random.Random(1), 0.0, connection=None)  # type: ignore[arg-type]
    await Recording().inject(ctx)
    assert victims == ["service", "relay"] * 3


def test_a_service_that_exited_in_a_run_that_allows_no_restart_is_a_violation() -> None:
    from orderflow.supervisor import Child

    calm, crashed = Child("order_svc", 1), Child("payment_svc", 1)
    crashed.exits.append(1)
    crashed.restarts = 1
    assert verify.restart_violations([calm]) == []
    [sentence] = verify.restart_violations([calm, crashed])
    assert sentence.startswith("payment_svc#1 exited during the run (exit codes [1])")


# -- replicas ---------------------------------------------------------------------------------


def test_a_queue_consumed_on_fewer_connections_than_replicas_fails() -> None:
    expected = {"payment_svc.commands": 3, "saga.events": 3}
    three = {"<c1>", "<c2>", "<c3>"}
    assert (
        verify.replica_problems({"payment_svc.commands": three, "saga.events": three}, expected)
        == []
    )
    problems = verify.replica_problems(
        {"payment_svc.commands": {"<c1>", "<c2>"}, "saga.events": three}, expected
    )
    assert problems == [
        "queue payment_svc.commands has consumers on 2 connection(s), expected 3 replicas"
    ]
    [missing] = verify.replica_problems({"payment_svc.commands": three}, expected)
    assert missing.startswith("queue saga.events has consumers on 0 connection(s)")


MODES_LOG = """\
payment_svc#1   | {"event": "service.started", "relay": "off", "batch": true, "workers": 3}
payment_svc#2   | {"event": "service.started", "relay": "off", "batch": false, "workers": 1}
payment_svc-relay#1| {"event": "service.started", "service": "payment_svc", "relay": "only", "batch": true, "workers": 0}
payment_svc#3   | {"event": "consumer.duplicate", "note": "service.started"}
payment_svc#3   | service.started batch=true
"""


def test_consumer_modes_are_read_from_what_each_process_said_at_start() -> None:
    assert verify.consumer_modes(MODES_LOG) == Counter(
        {"batch mode": 1, "batch mode with several workers": 1, "one-message mode": 1}
    )
    # a run whose processes all said batch has observed no one-message start
    all_batch = MODES_LOG.replace('"batch": false', '"batch": true')
    assert verify.consumer_modes(all_batch)["one-message mode"] == 0
    # batch with one worker each is not "several workers"
    one_worker = MODES_LOG.replace('"workers": 3', '"workers": 1')
    assert verify.consumer_modes(one_worker)["batch mode with several workers"] == 0
    assert verify.relay_starts(MODES_LOG) == Counter({"payment_svc": 1})
    assert verify.relay_starts(MODES_LOG.replace('"relay": "only"', '"relay": "off"')) == Counter()
    [(child, record)] = verify.log_records(MODES_LOG, "consumer.duplicate")
    assert child == "payment_svc#3" and record["note"] == "service.started"


def test_the_replicas_scenario_gives_each_replica_its_mode_and_relays_none() -> None:
    replicas = scenarios.Replicas()
    envs = {n: replicas.child_env(None, Child("payment_svc", n)) for n in (1, 2, 3, 4)}
    assert envs[1]["ORDERFLOW_CONSUMER__BATCH"] == "true"
    assert envs[2]["ORDERFLOW_CONSUMER__BATCH"] == "false"
    assert envs[3]["ORDERFLOW_CONSUMER__WORKERS"] == "2"
    assert envs[4] == envs[1]  # a fourth replica takes the first mode again
    assert replicas.child_env(None, Child("payment_svc", 1, role="relay")) == {}
    assert float(envs[1]["ORDERFLOW_SAGA__STEP_DEADLINE"]) < 1


def test_the_replicas_kill_storm_takes_every_service_in_turn_the_saga_first() -> None:
    children = [Child(s, n) for s in scenarios.SERVICES for n in (1, 2, 3)]
    children += [Child(s, n, role="relay") for s in scenarios.SERVICES for n in (1, 2)]
    replicas = scenarios.Replicas()
    picked = [replicas._candidates(children, turn) for turn in range(1, 9)]
    services = [{c.service for c in group} for group in picked[0::2]]
    assert services == [{"saga"}, {"order_svc"}, {"payment_svc"}, {"inventory_svc"}]
    assert all(len(group) == 3 and not group[0].role for group in picked[0::2])
    assert all(group and all(c.role == "relay" for c in group) for group in picked[1::2])


def test_relays_per_service_adds_that_many_relay_only_processes() -> None:
    supervisor = SimpleNamespace(children=_children())
    harness._add_relays(supervisor, 2)  # type: ignore[arg-type]
    relays = [c.name for c in supervisor.children if c.role]
    assert relays == [f"{service}-relay#{n}" for service in scenarios.SERVICES for n in (1, 2)]
