"""`orderflow chaos`: run the services under a fault scenario, heal, and prove nothing went wrong.

1. A throw-away vhost and four databases (unless told to use the configured ones).
2. The services as supervised children (restarted loudly when they die unasked).
3. A seeded order load at ``rate`` for ``duration`` seconds, with the scenario's faults.
   Publishing an order is retried with the same client-chosen order id until the broker
   confirms it, so an order counts as placed only once it is on the broker.
4. Heal, then wait for quiescence: every placed order terminal, every invariant holding.
5. The report: placed, terminal, lost, charged twice, refunds, duplicates absorbed, dead letters
   (which must be exactly the bad messages injected), time to quiesce, and every violation.

Faults are counted by their effects (orderflow.chaos.verify): ``faults`` holds only the faults
observed to have happened, ``faults_attempted`` what the scenario tried; a fault attempted but not
observed, or a scenario that observed none of the faults it is for, is a violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from libs.messaging.connection import connect as amqp_connect
from libs.pg import connection
from libs.settings import Settings
from libs.testing.infra import isolated_system
from order_svc import queries as order_queries
from orderflow.chaos import verify
from orderflow.chaos.poison import ANSWERED, FORGED_LOG_LINE, Poison
from orderflow.chaos.scenarios import SCENARIOS, SERVICES, Context, Scenario
from orderflow.check import CheckReport, check
from orderflow.client import OrderClient
from orderflow.confine import settings_from
from orderflow.dlq import Letter, list_letters
from orderflow.load import plan
from orderflow.setup import setup
from orderflow.supervisor import Child, Supervisor
from orderflow.system import SYSTEM
from saga import queries as saga_queries

QUIESCE_LIMIT = 30.0
MIX = {"ok": 80, "declined": 10, "out-of-stock": 10}


@dataclass
class ChaosReport:
    scenario: str
    seed: int
    duration: float
    rate: float
    placed: int = 0
    not_placed: int = 0
    terminal: int = 0
    confirmed: int = 0
    rejected: int = 0
    lost: list[str] = field(default_factory=list)
    charged_twice: int = 0
    refunds: int = 0
    duplicates_absorbed: int = 0
    saga_resends: int = 0  # commands the saga sent again on a deadline (absorbed like copies)
    # copies the duplicator sent, and rows a relay published, without a confirm coming back
    uncertain_copies: int = 0
    redelivered_duplicates: int = 0  # absorbed copies the broker itself delivered again
    dead_letters: int = 0
    bad_messages_injected: int = 0
    answered: int = 0  # bad messages answered with a refusal instead of a dead letter
    time_to_quiesce: float | None = None
    publish_retries: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # observed: what really happened
    faults_attempted: dict[str, int] = field(default_factory=dict)
    fault_log: list[str] = field(default_factory=list)  # seconds since the start, what
    # per broker node killed: seconds from the kill to the first order completed after it
    recovery_after_node_kills_s: list[float | None] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2, default=str)


@asynccontextmanager
async def isolated(base: Settings) -> AsyncIterator[dict[str, str]]:
    """A vhost, a database per service and a secrets directory of this run's own, removed
    afterwards."""
    from libs.messaging.admin import with_vhost

    async with isolated_system(
        SYSTEM,
        admin_dsn=base.pg_admin_dsn,
        amqp_base=with_vhost(base.amqp_url, "/"),
        prefix="ofchaos",
        api=base.management_api(),
    ) as env:
        yield env


async def _place_all(
    ctx: Context, client: OrderClient, report: ChaosReport, *, rate: float, seed: int, orders: int
) -> list[str]:
    placed: list[str] = []
    interval = 1.0 / rate
    next_at = time.monotonic()
    for planned in plan(orders, MIX, seed):
        order_id = str(uuid.uuid4())
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.place(
                    customer_id=planned.customer, items=list(planned.items), order_id=order_id
                )
                placed.append(order_id)
                break
            except Exception:  # broker gone, channel closed, confirm lost: same order id again
                ctx.counters["publish retries"] += 1
                if time.monotonic() > deadline:
                    report.not_placed += 1
                    break
                await asyncio.sleep(0.25)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return placed


def _record(line: str) -> dict[str, Any]:
    """A service's JSON log line as a dict (empty for anything else)."""
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _unhandled(
    bad: Poison, letter: Letter | None, order_id: str | None, refused: set[str]
) -> str | None:
    """Why a bad message did not end as it must (None: it did): its dead letter with the
    expected reason, or, for an answered kind, its order stored as refused."""
    if order_id is not None:
        if order_id not in refused:
            return f"bad message {bad.kind} ({bad.message_id}) was not answered: order {order_id} is not stored refused"
        return None
    if letter is None:
        return f"bad message {bad.kind} ({bad.message_id}) is not in a dead-letter queue"
    if letter.error_class != bad.expected_error:
        return f"bad message {bad.kind} died of {letter.error_class}, expected {bad.expected_error}"
    return None


async def _refused(settings: Settings, order_ids: list[str]) -> set[str]:
    """Which of these orders are stored refused (answered with OrderRejected, no saga)."""
    async with connection(settings.dsn_for("order_svc")) as conn:
        return await order_queries.refused_among(conn, order_ids)


async def _resent(settings: Settings) -> Counter[str]:
    """Per message id, how many times the saga re-sent that command."""
    async with connection(settings.dsn_for("saga")) as conn:
        return Counter(await saga_queries.resent_messages(conn))


async def _statuses(settings: Settings, order_ids: list[str]) -> dict[str, str]:
    async with connection(settings.dsn_for("order_svc")) as conn:
        return await order_queries.statuses(conn, order_ids)


async def _quiesce(
    settings: Settings, order_ids: list[str], *, limit: float
) -> tuple[float | None, dict[str, str], CheckReport | None]:
    """Seconds until every order is terminal and every invariant holds (None if not within
    limit), the orders' statuses, and the check report that held."""
    started = time.monotonic()
    statuses: dict[str, str] = {}
    while time.monotonic() - started < limit:
        with contextlib.suppress(Exception):  # the database may still be coming back
            statuses = await _statuses(settings, order_ids)
            ended = len(statuses) == len(order_ids) and "PENDING" not in statuses.values()
            if ended:
                report = await check(settings, allow_dead_letters=True)  # matched in _fill
                if report.ok:
                    return time.monotonic() - started, statuses, report
        await asyncio.sleep(0.5)
    return None, statuses, None


async def run_chaos(
    scenario_name: str,
    *,
    duration: float,
    rate: float,
    seed: int,
    settings: Settings | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> ChaosReport:
    scenario: Scenario = SCENARIOS[scenario_name]()
    report = ChaosReport(scenario_name, seed, duration, rate)
    base = settings or Settings()
    async with AsyncExitStack() as stack:
        if env is None:
            env = await stack.enter_async_context(isolated(base))
        env = {
            **env,
            "ORDERFLOW_SAGA__STEP_DEADLINE": "5",
            "ORDERFLOW_SAGA__RETRIES": "2",
            "ORDERFLOW_RELAY__SWEEP_INTERVAL": "2",
            **scenario.settings,
        }
        # the run's settings, without touching this process's environment (a test suite
        # running several scenarios must not inherit one run's databases in the next test)
        run_settings = settings_from({**os.environ, **env})
        await setup(run_settings)
        rng = random.Random(seed)
        connection = await amqp_connect(run_settings.amqp_url, name="orderflow-chaos")
        stack.push_async_callback(connection.close)
        output = io.StringIO()
        if log_path is not None:  # saved last, whatever happens: a failed run needs it most
            stack.callback(_save, log_path, output)
        orders = max(1, int(duration * rate))
        ctx: Context | None = None
        supervisor = Supervisor(
            env={**os.environ, **env},
            replicas=dict.fromkeys(SERVICES, scenario.replicas),
            restart=True,
            output=output,
            color=False,
            extra_env=lambda child: scenario.child_env(ctx, child),
        )
        if scenario.relays:
            _add_relays(supervisor, scenario.relays_per_service)
        ctx = Context(
            supervisor,
            rng,
            time.monotonic() + duration,
            connection,
            orders_planned=orders,
            extra={"env": env},
            log=output.getvalue,
        )
        await scenario.before(ctx)
        stack.push_async_callback(_close_proxies, ctx)
        stack.push_async_callback(supervisor.stop_all)
        await supervisor.start_all(timeout=90)
        client = await OrderClient.open(run_settings.amqp_url)
        stack.push_async_callback(client.close)
        ctx.stop_at = time.monotonic() + duration
        ctx.faults.started = time.monotonic()  # the fault log counts from the fault window
        faults = asyncio.create_task(scenario.inject(ctx))
        order_ids = await _place_all(ctx, client, report, rate=rate, seed=seed, orders=orders)
        await faults
        for task in list(ctx.tasks):
            await task
        await scenario.heal(ctx)
        for child in supervisor.children:
            if not child.alive:
                await supervisor.start(child)
        await supervisor.wait_ready(timeout=90)
        report.placed = len(order_ids)
        took, statuses, held = await _quiesce(run_settings, order_ids, limit=QUIESCE_LIMIT + 30)
        report.time_to_quiesce = took
        await _fill(report, ctx, run_settings, order_ids, statuses, output.getvalue(), held)
        report.recovery_after_node_kills_s = recovery_after(
            ctx.extra.get("node kills at", []), client
        )
        report.violations += ctx.faults.violations(scenario.required)
        if not scenario.restarts_allowed:
            report.violations += verify.restart_violations(supervisor.children)
    return report


def recovery_after(kills: list[float], client: OrderClient) -> list[float | None]:
    """For each kill (monotonic time), seconds until the client saw the next order end."""
    ended = sorted(o.ended_at for o in client.outcomes.values() if o.ended_at is not None)
    return [
        round(next((t for t in ended if t > kill), float("nan")) - kill, 2)
        if any(t > kill for t in ended)
        else None
        for kill in kills
    ]


RELAY_MODE = (
    "ORDERFLOW_RELAY__MODE"  # libs.service.app's RelayMode: in-process (default), off, only
)


def _add_relays(supervisor: Supervisor, count: int = 1) -> None:
    """``count`` relay-only processes (RELAY_MODE=only) next to each service, whose own
    processes then relay nothing (RELAY_MODE=off): each outbox is published by the standalone
    relays alone, so killing them is a fault the system must survive, not the loss of an idle
    standby."""
    for child in supervisor.children:
        child.env[RELAY_MODE] = "off"
    services = dict.fromkeys(child.service for child in supervisor.children)
    supervisor.children += [
        Child(service, n + 1, role="relay", env={RELAY_MODE: "only"})
        for service in services
        for n in range(count)
    ]


def _save(path: Path, output: io.StringIO) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(output.getvalue())


async def _close_proxies(ctx: Context) -> None:
    for proxy in ctx.proxies.values():
        await proxy.close()


async def _fill(
    report: ChaosReport,
    ctx: Context,
    settings: Settings,
    order_ids: list[str],
    statuses: dict[str, str],
    log: str,
    held: CheckReport | None,
) -> None:
    counts = Counter(statuses.get(o, "MISSING") for o in order_ids)
    report.terminal = counts["CONFIRMED"] + counts["REJECTED"]
    report.confirmed, report.rejected = counts["CONFIRMED"], counts["REJECTED"]
    report.lost = [o for o in order_ids if statuses.get(o, "MISSING") in ("MISSING", "PENDING")]
    if report.lost:
        report.violations.append(
            f"{len(report.lost)} orders lost or never ended, e.g. {report.lost[:3]}"
        )
    if report.time_to_quiesce is None or report.time_to_quiesce > QUIESCE_LIMIT:
        report.violations.append(f"not quiet within {QUIESCE_LIMIT:.0f} s of healing")
    # the report that held when quiet, else a last one (dead letters are matched below)
    result = held or await check(settings, allow_dead_letters=True)
    report.violations += result.violations
    report.charged_twice = int(result.figures.get("double_charges", 0))
    report.refunds = int(result.figures.get("refunds", 0))
    lines = [line.partition("| ")[2] for line in log.splitlines()]
    absorbed, redelivered, republished = verify.absorbed_duplicates(map(_record, lines))
    report.duplicates_absorbed = sum(absorbed.values()) + redelivered
    report.redelivered_duplicates = redelivered
    duplicator = ctx.extra.get("duplicator")
    if duplicator is not None:
        copies = Counter(duplicator.copied)  # an id copied twice (a re-send copied too): two
        for message_id, count in copies.items():
            absorbed_copies = min(count, absorbed[message_id])
            if absorbed_copies:
                ctx.faults.saw("copies injected", absorbed_copies)
            for _ in range(count - absorbed_copies):
                ctx.faults.miss("copies injected", f"a copy of {message_id} was never absorbed")
        # a saga re-sends an unanswered command on its deadline with the same id, by design
        resent = await _resent(settings)
        report.saga_resends = sum(resent.values())
        uncertain = [*duplicator.uncertain, *republished.elements()]
        report.uncertain_copies = len(uncertain)
        report.violations += verify.unexplained_duplicates(
            absorbed, copied=duplicator.copied, uncertain=uncertain, resent=resent
        )
    if any(line.startswith(FORGED_LOG_LINE) for line in lines):
        report.violations.append("a forged log line got into the service logs")
    letters = await list_letters(settings)
    report.dead_letters = len(letters)
    report.bad_messages_injected = len(ctx.injected)
    answered = {
        p.message_id: json.loads(p.body)["data"]["order_id"]
        for p in ctx.injected
        if p.expected_error == ANSWERED
    }
    refused = await _refused(settings, list(answered.values()))
    expected = {p.message_id: p for p in ctx.injected if p.expected_error != ANSWERED}
    found = {letter.id: letter for letter in letters}
    for bad in ctx.injected:
        why = _unhandled(bad, found.get(bad.message_id), answered.get(bad.message_id), refused)
        if why:
            report.violations.append(why)
            ctx.faults.miss("bad messages injected", why)
        else:
            ctx.faults.saw("bad messages injected")
            report.answered += bad.message_id in answered
    for letter_id, letter in found.items():
        if letter_id not in expected:
            report.violations.append(
                f"unexpected dead letter {letter_id} in {letter.where}: "
                f"{letter.error_class}: {letter.error[:200]}"
            )
    report.publish_retries = ctx.counters["publish retries"]
    report.faults = dict(ctx.faults.observed)
    report.faults_attempted = dict(ctx.faults.attempted)
    report.fault_log = list(ctx.faults.log)
