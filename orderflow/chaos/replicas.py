"""Replicas racing on the same orders: several copies of each service and relay-only processes,
killed in turns (:class:`Replicas`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import ClassVar

from libs.messaging.admin import vhost_of
from orderflow.chaos import verify
from orderflow.chaos.scenario import DSN_KEYS, SERVICES, Context, KillStorm
from orderflow.supervisor import Child
from orderflow.system import SYSTEM


class Replicas(KillStorm):
    """Three processes of every service (the saga included) and two standalone relays each,
    under a kill storm over all of them. The replicas run the two consumer modes side by side
    (#1 batch with three workers, #2 one message per transaction, #3 batch with two workers),
    and the saga replicas' step deadlines are 0.02, 1 and 0.1 s with one re-send, so re-sent
    commands and compensations race the first command of an order on another replica.

    Observed, beyond the kill storm's kills and restarts: every queue consumed on as many broker
    connections as there are replicas; starts of processes in each mode; in the saga log,
    re-sends, compensations, and replies it ignored because it no longer awaited them (a
    participant handled a command after the saga had re-sent it, compensated or ended: the
    race; the saga's inbox absorbs copies before they get that far). The
    participants' ``lock.contended`` records (two transactions of one order met) are counted
    when there are some."""

    name = "replicas"
    replicas = 3
    relays_per_service = 2
    kill_every = (0.5, 2.0)
    settings: ClassVar[Mapping[str, str]] = {
        "ORDERFLOW_SAGA__STEP_DEADLINE": "1",
        "ORDERFLOW_SAGA__RETRIES": "1",
    }
    BATCH, WORKERS, DEADLINE = (
        "ORDERFLOW_CONSUMER__BATCH",
        "ORDERFLOW_CONSUMER__WORKERS",
        "ORDERFLOW_SAGA__STEP_DEADLINE",
    )
    MODES: ClassVar[Mapping[int, Mapping[str, str]]] = {
        1: {BATCH: "true", WORKERS: "3", DEADLINE: "0.02"},
        2: {BATCH: "false", DEADLINE: "1"},
        3: {BATCH: "true", WORKERS: "2", DEADLINE: "0.1"},
    }
    required = (
        *KillStorm.required,
        "kills of saga replicas",
        "queues consumed by every replica",
        "starts in batch mode with several workers",
        "starts in one-message mode",
        "services with two relay-only processes",
        "commands re-sent by the saga",
        "steps given up after their deadlines",
        "replies to a first command after the saga gave up on it",
    )

    def child_env(self, ctx: Context | None, child: Child) -> dict[str, str]:
        return {} if child.role else dict(self.MODES[(child.replica - 1) % len(self.MODES) + 1])

    def _candidates(self, ready: list[Child], turn: int) -> list[Child]:
        """By turns a relay-only process and a service replica, the services in rotation (the
        saga first), so that every service loses replicas even in a short run."""
        if turn % 2 == 0:
            return [c for c in ready if c.role == "relay"]
        rotation = ("saga", *(s for s in SERVICES if s != "saga"))
        service = rotation[(turn // 2) % len(rotation)]
        return [c for c in ready if not c.role and c.service == service]

    async def _kill(self, ctx: Context, victim: Child) -> int | None:
        pid = await super()._kill(ctx, victim)
        if pid is not None and not victim.role:
            ctx.faults.saw(f"kills of {victim.service} replicas")
        return pid

    async def heal(self, ctx: Context) -> None:
        env = ctx.env
        expected = {queue.name: self.replicas for queue in SYSTEM.queues.values()}
        await ctx.supervisor.wait_ready(timeout=90)  # every replica back before counting
        # a restarted replica's consumers may still be coming; each probe is two rabbitmqctl
        # calls, seconds each on a slow day
        deadline = time.monotonic() + 60
        while True:
            consumers = await verify.queue_consumers(vhost_of(env["ORDERFLOW_AMQP_URL"]))
            problems = verify.replica_problems(consumers, expected)
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for problem in problems:
            ctx.faults.miss("queues consumed by every replica", problem)
        if not problems:
            ctx.faults.saw("queues consumed by every replica", len(expected))
        log = ctx.log()
        modes = verify.consumer_modes(log)
        for mode in ("batch mode with several workers", "one-message mode"):
            if modes[mode]:
                ctx.faults.saw(f"starts in {mode}", modes[mode])
            else:
                ctx.faults.miss(f"starts in {mode}", f"no process said it runs {mode}")
        relays = verify.relay_starts(log)
        short = [s for s in SERVICES if relays[s] < self.relays_per_service]
        if short:
            ctx.faults.miss(
                "services with two relay-only processes",
                f"fewer than {self.relays_per_service} relay-only starts for {short}",
            )
        else:
            ctx.faults.saw("services with two relay-only processes", len(SERVICES))
        await self._saga_races(ctx)
        # figures, not requirements: two transactions of one order overlapping (in one process
        # or two), or a refund overtaking its charge, are rare on a system that keeps up
        # (tests/integration/test_participant_races.py forces both)
        met = len(verify.log_records(log, "lock.contended"))
        if met:
            ctx.faults.saw("transactions that waited for another of the same order", met)

    async def _saga_races(self, ctx: Context) -> None:
        """From the saga log: re-sends; steps given up after their deadlines (compensations a
        business failure did not cause); replies to a step's first command (its success or
        failure event) that came after the saga had given up on that step — the participant
        handled the command after the saga's re-send and compensation were on their way."""
        from libs.pg import connection
        from saga.queries import race_counts

        async with connection(ctx.env[DSN_KEYS["saga"]]) as conn:
            row = await race_counts(conn)
        for key, kind in (
            ("resent", "commands re-sent by the saga"),
            ("given_up", "steps given up after their deadlines"),
            ("late", "replies to a first command after the saga gave up on it"),
        ):
            if row[key]:
                ctx.faults.saw(kind, row[key])
            else:
                ctx.faults.miss(kind, f"the saga log shows no {kind}")
