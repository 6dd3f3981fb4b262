"""What every chaos scenario is given (:class:`Context`), what it is (:class:`Scenario`), and the
scenario most others build on: killing services (:class:`KillStorm`)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aio_pika.abc import AbstractRobustConnection

from orderflow.chaos import poison as poison_kinds
from orderflow.chaos import verify
from orderflow.chaos.proxy import TcpProxy
from orderflow.chaos.verify import FaultLedger
from orderflow.supervisor import Child, Supervisor
from orderflow.system import SYSTEM

SERVICES = SYSTEM.names
DSN_KEYS = SYSTEM.dsn_envs
READY_LIMIT = 60.0  # seconds a restarted process has to say it is ready


@dataclass
class Context:
    supervisor: Supervisor
    rng: random.Random
    stop_at: float
    connection: AbstractRobustConnection
    counters: Counter[str] = field(default_factory=Counter)  # figures that are not faults
    faults: FaultLedger = field(default_factory=FaultLedger)
    proxies: dict[str, TcpProxy] = field(default_factory=dict)
    injected: list[poison_kinds.Poison] = field(default_factory=list)
    faults_on: bool = True
    orders_planned: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    log: Callable[[], str] = lambda: ""  # the supervised children's output so far

    @property
    def env(self) -> dict[str, str]:
        """The run's ORDERFLOW_* variables (vhost, databases, broker user prefix…)."""
        env: dict[str, str] = self.extra["env"]
        return env

    def remaining(self) -> float:
        return self.stop_at - time.monotonic()

    async def pause(self, low: float, high: float) -> bool:
        """Sleep a random while; False when the fault window closed meanwhile."""
        await asyncio.sleep(min(self.rng.uniform(low, high), max(0.0, self.remaining())))
        return self.remaining() > 0

    async def turns(self, low: float, high: float, *, at_least: int = 0) -> AsyncIterator[int]:
        """Turns 1, 2, … each after a random pause (:meth:`pause`) until the fault window closes,
        but at least ``at_least`` of them however long the earlier ones took: on a slow machine
        one fault can outlast a short window, and a scenario must still inject each kind it
        exists for."""
        turn = 0
        while await self.pause(low, high) or turn < at_least:
            turn += 1
            yield turn

    def later(self, delay: float, coro: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await coro

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Scenario:
    name = ""
    relays = False  # also run relay-only processes per service (the services relay nothing)
    relays_per_service = 1
    replicas = 1  # processes of each service
    # settings of the run (children and the harness's checks alike), over the harness's own
    settings: ClassVar[Mapping[str, str]] = {}
    required: tuple[str, ...] = ()  # fault kinds that must each be observed at least once
    restarts_allowed = True  # False: a service that exits during the run is a violation

    def child_env(self, ctx: Context | None, child: Child) -> dict[str, str]:
        return {}

    async def before(self, ctx: Context) -> None:
        return None

    async def inject(self, ctx: Context) -> None:
        return None

    async def heal(self, ctx: Context) -> None:
        return None


class KillStorm(Scenario):
    """SIGKILL a ready process every 1-4 s, by turns one of a service's own and a relay-only one
    (``relays``); restart it after 0.5-3 s. A kill counts once the pid is gone, ended by SIGKILL;
    a restart once a new pid said it was ready."""

    name = "kill-storm"
    relays = True
    required: tuple[str, ...] = (
        "kills",
        "restarts",
        "kills of service processes",
        "kills of relay-only processes",
    )
    kill_every = (1.0, 4.0)  # seconds between kills, drawn uniformly

    async def inject(self, ctx: Context) -> None:
        async for turn in ctx.turns(*self.kill_every):
            ready = [c for c in ctx.supervisor.children if c.alive and c.ready.is_set()]
            candidates = self._candidates(ready, turn) or ready
            if not candidates:
                continue
            victim = ctx.rng.choice(candidates)
            pid = await self._kill(ctx, victim)
            if pid is not None:
                ctx.later(ctx.rng.uniform(0.5, 3), self._restart(ctx, victim, pid))

    def _candidates(self, ready: list[Child], turn: int) -> list[Child]:
        """Who may be killed this turn: by turns a service's own process and a relay-only one."""
        if turn % 2:
            return [c for c in ready if not c.role]
        return [c for c in ready if c.role == "relay"]

    async def _kill(self, ctx: Context, victim: Child) -> int | None:
        """SIGKILL the victim; its pid once verified gone, else None."""
        number = ctx.faults.attempt("kills")
        process = victim.process
        assert process is not None
        await ctx.supervisor.kill(victim, signal.SIGKILL)
        problem = verify.kill_problem(process.pid, process.returncode, signal.SIGKILL)
        if problem is not None:
            ctx.faults.miss("kills", f"{victim.name}: {problem}", number)
            return None
        ctx.faults.saw("kills")
        ctx.faults.saw(f"kills of {'relay-only' if victim.role else 'service'} processes")
        ctx.faults.saw(f"kills:{victim.name}")
        return process.pid

    async def _restart(self, ctx: Context, victim: Child, old_pid: int) -> None:
        number = ctx.faults.attempt("restarts")
        await ctx.supervisor.start(victim)
        try:
            await asyncio.wait_for(victim.ready.wait(), READY_LIMIT)
            ready = True
        except TimeoutError:
            ready = False
        new_pid = victim.process.pid if victim.process is not None else None
        problem = verify.restart_problem(old_pid, new_pid, ready=ready)
        ctx.faults.settle("restarts", problem and f"{victim.name}: {problem}", number)
