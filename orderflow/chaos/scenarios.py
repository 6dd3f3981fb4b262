"""The fault scenarios. Each injects faults until ``ctx.stop_at`` and then heals.

All randomness comes from ``ctx.rng`` (seeded), so a scenario with the same seed makes the same
decisions in the same order; timing still depends on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from libs.messages.envelope import utcnow
from libs.messaging.publisher import Outgoing, Publisher
from orderflow.chaos import poison as poison_kinds
from orderflow.chaos.duplicator import Duplicator
from orderflow.chaos.proxy import TcpProxy
from orderflow.supervisor import Child, Supervisor


@dataclass
class Context:
    supervisor: Supervisor
    rng: random.Random
    stop_at: float
    connection: AbstractRobustConnection
    counters: Counter[str] = field(default_factory=Counter)
    proxies: dict[str, TcpProxy] = field(default_factory=dict)
    injected: list[poison_kinds.Poison] = field(default_factory=list)
    faults_on: bool = True
    orders_planned: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def remaining(self) -> float:
        return self.stop_at - time.monotonic()

    async def pause(self, low: float, high: float) -> bool:
        """Sleep a random while; False when the fault window closed meanwhile."""
        await asyncio.sleep(min(self.rng.uniform(low, high), max(0.0, self.remaining())))
        return self.remaining() > 0

    def later(self, delay: float, coro: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await coro

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _cmd(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await proc.wait()


def _pg_version() -> str:
    import os

    return sorted(os.listdir("/etc/postgresql"))[0]


class Scenario:
    name = ""
    relays = False

    def child_env(self, ctx: Context | None, child: Child) -> dict[str, str]:
        return {}

    async def before(self, ctx: Context) -> None:
        return None

    async def inject(self, ctx: Context) -> None:
        return None

    async def heal(self, ctx: Context) -> None:
        return None


class KillStorm(Scenario):
    """SIGKILL a random service or relay process every 1-5 s; restart it after 0.5-3 s."""

    name = "kill-storm"
    relays = True

    async def inject(self, ctx: Context) -> None:
        while await ctx.pause(1, 5):
            alive = [c for c in ctx.supervisor.children if c.alive]
            if not alive:
                continue
            victim = ctx.rng.choice(alive)
            await ctx.supervisor.kill(victim, signal.SIGKILL)
            ctx.counters["kills"] += 1
            ctx.counters[f"kills:{victim.name}"] += 1
            ctx.later(ctx.rng.uniform(0.5, 3), ctx.supervisor.start(victim))


class CommitBoundaries(Scenario):
    """Crash right after a consumer's commit (before its ack) and right after a relay's publish
    (before it marks the rows): the fault points of libs.faults, enabled in the children."""

    name = "commit-boundaries"

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
        ctx.counters["crashes at fault points"] = sum(
            c.exits.count(137) for c in ctx.supervisor.children
        )


class BrokerRestart(Scenario):
    """Restart RabbitMQ (stop_app/start_app) or drop every AMQP connection, several times."""

    name = "broker-restart"

    async def inject(self, ctx: Context) -> None:
        if not shutil.which("rabbitmqctl"):
            raise RuntimeError("broker-restart needs rabbitmqctl (a local RabbitMQ)")
        n = 0
        while await ctx.pause(3, 6):
            n += 1
            if n % 2:
                await _cmd(
                    "rabbitmqctl", "-q", "close_all_connections", "chaos: dropping connections"
                )
                ctx.counters["connections dropped"] += 1
            else:
                await _cmd("rabbitmqctl", "-q", "stop_app")
                await asyncio.sleep(ctx.rng.uniform(1, 3))
                await _cmd("rabbitmqctl", "-q", "start_app")
                ctx.counters["broker restarts"] += 1

    async def heal(self, ctx: Context) -> None:
        await _cmd("rabbitmqctl", "-q", "start_app")
        await _cmd("rabbitmqctl", "-q", "await_startup")


class DatabaseRestart(Scenario):
    """Restart PostgreSQL (fast shutdown: every connection is cut) under load."""

    name = "database-restart"

    async def inject(self, ctx: Context) -> None:
        if not shutil.which("pg_ctlcluster"):
            raise RuntimeError("database-restart needs pg_ctlcluster (a local PostgreSQL)")
        while await ctx.pause(4, 8):
            await _cmd(
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                _pg_version(),
                "main",
                "restart",
                "-m",
                "fast",
            )
            ctx.counters["database restarts"] += 1

    async def heal(self, ctx: Context) -> None:
        await _cmd("pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "start")


class NetworkFaults(Scenario):
    """Services reach the broker and the database through TCP proxies that add latency, reset
    connections and blackhole traffic for a while."""

    name = "network-faults"

    async def before(self, ctx: Context) -> None:
        ctx.proxies["amqp"] = await TcpProxy(target_host="127.0.0.1", target_port=5672).start()
        ctx.proxies["pg"] = await TcpProxy(target_host="127.0.0.1", target_port=5432).start()

    def child_env(self, ctx: Context | None, child: Child) -> dict[str, str]:
        assert ctx is not None
        base = ctx.extra["env"]
        amqp, pg = ctx.proxies["amqp"].port, ctx.proxies["pg"].port
        out = {"ORDERFLOW_AMQP_URL": base["ORDERFLOW_AMQP_URL"].replace(":5672/", f":{amqp}/")}
        for key in (
            "ORDERFLOW_ORDER_DSN",
            "ORDERFLOW_PAYMENT_DSN",
            "ORDERFLOW_INVENTORY_DSN",
            "ORDERFLOW_SAGA_DSN",
        ):
            out[key] = base[key].replace(":5432/", f":{pg}/")
        return out

    async def inject(self, ctx: Context) -> None:
        while await ctx.pause(1.5, 3.5):
            proxy_name = ctx.rng.choice(("amqp", "pg"))
            proxy = ctx.proxies[proxy_name]
            fault = ctx.rng.choice(("latency", "reset", "blackhole"))
            ctx.counters[f"{fault} on {proxy_name}"] += 1
            if fault == "reset":
                proxy.reset_all()
            elif fault == "latency":
                proxy.latency = ctx.rng.uniform(0.02, 0.1)
                await ctx.pause(1, 3)
                proxy.latency = 0.0
            else:
                proxy.blackhole(True)
                await ctx.pause(1, 3)
                proxy.blackhole(False)

    async def heal(self, ctx: Context) -> None:
        for proxy in ctx.proxies.values():
            proxy.heal()


class Duplicates(Scenario):
    """Re-deliver 20 % of all messages with the same id; every copy must be absorbed."""

    name = "duplicates"

    async def before(self, ctx: Context) -> None:
        duplicator = Duplicator(ctx.connection, share=0.2, seed=ctx.rng.randrange(1 << 30))
        await duplicator.start()
        ctx.extra["duplicator"] = duplicator

    async def inject(self, ctx: Context) -> None:
        await asyncio.sleep(max(0.0, ctx.remaining()))

    async def heal(self, ctx: Context) -> None:
        duplicator: Duplicator = ctx.extra["duplicator"]
        await duplicator.close()
        ctx.counters["copies injected"] = duplicator.copies


class PoisonMix(Scenario):
    """Mix every kind of bad message into the good ones; each must land in a dead-letter queue
    with its reason, none of the good ones lost."""

    name = "poison"

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
                ctx.counters[f"poison:{bad.kind}"] += 1
        finally:
            with contextlib.suppress(Exception):
                await publisher.close()


SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s
    for s in (
        KillStorm,
        CommitBoundaries,
        BrokerRestart,
        DatabaseRestart,
        NetworkFaults,
        Duplicates,
        PoisonMix,
    )
}
