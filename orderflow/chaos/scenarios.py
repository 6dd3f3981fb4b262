"""The fault scenarios. Each injects faults until ``ctx.stop_at`` and then heals.

All randomness comes from ``ctx.rng`` (seeded), so a scenario with the same seed makes the same
decisions in the same order; timing still depends on the machine.

Every fault is recorded in ``ctx.faults`` (a :class:`~orderflow.chaos.verify.FaultLedger`) as
attempted, then as observed only once its effect was seen, or as missed with the reason; a
scenario's ``required`` faults must each have been observed at least once. See
:mod:`orderflow.chaos.verify` for how each kind is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid

from libs.messages.envelope import utcnow
from libs.messaging.publisher import Outgoing, Publisher
from orderflow import hostile
from orderflow.chaos import poison as poison_kinds
from orderflow.chaos import verify
from orderflow.chaos.cluster import BrokerNodeKill
from orderflow.chaos.duplicator import Duplicator
from orderflow.chaos.infrastructure import BrokerRestart, DatabaseRestart, NetworkFaults
from orderflow.chaos.replicas import Replicas
from orderflow.chaos.scenario import DSN_KEYS, READY_LIMIT, SERVICES, Context, KillStorm, Scenario
from orderflow.supervisor import Child

__all__ = [
    "DSN_KEYS",
    "READY_LIMIT",
    "SCENARIOS",
    "SERVICES",
    "BrokerNodeKill",
    "BrokerRestart",
    "CommitBoundaries",
    "Context",
    "DatabaseRestart",
    "Duplicates",
    "HostileClients",
    "KillStorm",
    "NetworkFaults",
    "PoisonMix",
    "Replicas",
    "Scenario",
]


class CommitBoundaries(Scenario):
    """Crash right after a consumer's commit (before its ack) and right after a relay's publish
    (before it marks the rows): the fault points of libs.faults, enabled in the children. A crash
    counts when the child wrote the fault point's marker and exited with its exit code."""

    name = "commit-boundaries"
    required = ("crashes at fault points",)

    def child_env(self, ctx: Context | None, child: Child) -> dict[str, str]:
        if ctx is not None and not ctx.faults_on:
            return {}
        seed = ctx.rng.randrange(1 << 30) if ctx else 0
        return {
            "ORDERFLOW_FAULTS": "consumer.after_commit=0.01,relay.after_publish=0.03",
            "ORDERFLOW_FAULTS_SEED": str(seed),
        }

    async def heal(self, ctx: Context) -> None:
        ctx.faults_on = False
        for child in list(ctx.supervisor.children):  # restart without fault points
            await ctx.supervisor.kill(child, signal.SIGTERM)
            await ctx.supervisor.start(child)
        await ctx.supervisor.wait_ready(timeout=90)
        # The supervisor records an exit once it has read the child's last line: give the
        # watchers of the last crashes a moment to catch up with the markers.
        deadline = time.monotonic() + 5
        while True:
            exits = {c.name: list(c.exits) for c in ctx.supervisor.children}
            observed, problems = verify.crash_problems(verify.fired_points(ctx.log()), exits)
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        for problem in problems:
            ctx.faults.miss("crashes at fault points", problem)
        ctx.faults.saw("crashes at fault points", sum(observed.values()))
        for point, count in observed.items():
            ctx.faults.saw(f"crashes at {point}", count)


class Duplicates(Scenario):
    """Re-deliver 20 % of all messages with the same id; every copy must be absorbed. A copy
    counts when a consumer's log records it absorbed (harness._fill), not when it was sent."""

    name = "duplicates"
    required = ("copies injected",)

    async def before(self, ctx: Context) -> None:
        duplicator = Duplicator(ctx.connection, share=0.2, seed=ctx.rng.randrange(1 << 30))
        await duplicator.start()
        ctx.extra["duplicator"] = duplicator

    async def inject(self, ctx: Context) -> None:
        await asyncio.sleep(max(0.0, ctx.remaining()))

    async def heal(self, ctx: Context) -> None:
        duplicator: Duplicator = ctx.extra["duplicator"]
        await duplicator.close()
        for _ in duplicator.copied:
            ctx.faults.attempt("copies injected")


class PoisonMix(Scenario):
    """Mix every kind of bad message into the good ones; each must land in a dead-letter queue
    with its reason, none of the good ones lost. A bad message counts once the broker confirmed
    it (the report then matches every one against the dead letters)."""

    name = "poison"
    required = ("bad messages injected",)

    async def inject(self, ctx: Context) -> None:
        count = max(len(poison_kinds.KINDS), ctx.orders_planned // 10)
        batch = poison_kinds.batch(ctx.rng, count)
        publisher = Publisher(ctx.connection)
        try:
            spacing = 2 * max(0.0, ctx.remaining()) / len(batch)
            for bad in batch:
                await ctx.pause(0, max(0.01, spacing))  # spread over the window, then no wait
                await publisher.publish(
                    Outgoing(
                        exchange=bad.exchange,
                        routing_key=bad.routing_key,
                        body=bad.body,
                        message_id=bad.message_id,
                        type=bad.routing_key,
                        timestamp=utcnow(),
                        headers=bad.headers,
                        content_type=bad.content_type,
                    )
                )
                ctx.injected.append(bad)
                # observed later, by its effect: its dead letter or its refusal (harness._fill)
                ctx.faults.attempt("bad messages injected")
        finally:
            with contextlib.suppress(Exception):
                await publisher.close()


class HostileClients(Scenario):
    """The hostile corpus (``orderflow/hostile.py``) mixed into the steady order load, from a
    client's own broker account: every kind, then drawn at random, spread over the window. Each
    must end as the corpus says — its dead letter with its reason, or its order stored refused
    (answered) — the good orders all end, and no service restarts."""

    name = "hostile-clients"
    required = ("bad messages injected",)
    restarts_allowed = False

    async def inject(self, ctx: Context) -> None:
        cases = list(hostile.CORPUS)
        ctx.rng.shuffle(cases)
        count = max(len(cases), ctx.orders_planned // 4)
        cases += [ctx.rng.choice(hostile.CORPUS) for _ in range(count - len(cases))]
        spacing = 2 * max(0.0, ctx.remaining()) / len(cases)
        async with hostile.stranger(
            ctx.env["ORDERFLOW_AMQP_URL"], prefix=ctx.env["ORDERFLOW_AMQP_USER_PREFIX"]
        ) as channel:
            exchange = await channel.get_exchange("order.commands", ensure=False)
            for case in cases:
                await ctx.pause(0, max(0.01, spacing))  # spread over the window, then no wait
                sent = case.build(str(uuid.uuid4()))
                bad = poison_kinds.Poison(
                    kind=case.name,
                    exchange="order.commands",
                    routing_key=sent.routing_key,
                    body=sent.body,
                    message_id=str(uuid.uuid4()),
                    expected_error=(
                        poison_kinds.ANSWERED if case.expect == hostile.ANSWER else case.error_class
                    ),
                )
                await exchange.publish(sent.message(bad.message_id), routing_key=sent.routing_key)
                ctx.injected.append(bad)
                ctx.faults.attempt("bad messages injected")  # observed by its effect, later


SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s
    for s in (
        KillStorm,
        Replicas,
        CommitBoundaries,
        BrokerRestart,
        DatabaseRestart,
        NetworkFaults,
        Duplicates,
        PoisonMix,
        HostileClients,
        BrokerNodeKill,
    )
}
