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
import random
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from aio_pika.abc import AbstractRobustConnection

from libs.messages.envelope import utcnow
from libs.messaging.admin import vhost_of
from libs.messaging.publisher import Outgoing, Publisher
from libs.pg.admin import database_of
from orderflow import hostile
from orderflow.chaos import poison as poison_kinds
from orderflow.chaos import verify
from orderflow.chaos.duplicator import Duplicator
from orderflow.chaos.proxy import TcpProxy
from orderflow.chaos.verify import CommandFailed, FaultLedger, cmd
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
        turn = 0
        while await ctx.pause(*self.kill_every):
            ready = [c for c in ctx.supervisor.children if c.alive and c.ready.is_set()]
            turn += 1
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
        deadline = time.monotonic() + 15  # a restarted replica's consumers may still be coming
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
        from libs.pg.pool import connect
        from saga.domain.order_saga import order_saga

        steps = order_saga().steps
        first_replies = sorted(
            {s.success.TYPE for s in steps} | {s.failure.TYPE for s in steps if s.failure}
        )
        conn = await connect(ctx.env[DSN_KEYS["saga"]])
        try:
            row = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE event = 'retry') AS resent,
                          count(*) FILTER (WHERE event = 'timed_out') AS given_up,
                          count(*) FILTER (WHERE event = 'ignored'
                                             AND detail->>'type' = ANY($1::text[])) AS late
                     FROM saga_log""",
                first_replies,
            )
        finally:
            await conn.close()
        assert row is not None
        for key, kind in (
            ("resent", "commands re-sent by the saga"),
            ("given_up", "steps given up after their deadlines"),
            ("late", "replies to a first command after the saga gave up on it"),
        ):
            if row[key]:
                ctx.faults.saw(kind, row[key])
            else:
                ctx.faults.miss(kind, f"the saga log shows no {kind}")


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


class BrokerRestart(Scenario):
    """By turns restart RabbitMQ's application (stop_app/start_app) and drop every connection of
    the run's vhost. A restart counts once the application is back as a new instance; a drop
    once every connection listed before it is gone."""

    name = "broker-restart"
    required = ("broker restarts", "connections dropped")

    async def inject(self, ctx: Context) -> None:
        if not shutil.which("rabbitmqctl"):
            raise RuntimeError("broker-restart needs rabbitmqctl (a local RabbitMQ)")
        vhost = vhost_of(ctx.env["ORDERFLOW_AMQP_URL"])
        turn = 0
        while await ctx.pause(1, 3):
            turn += 1  # a drop first: it is quick, and so is the restart after it
            if turn % 2:
                await self._drop(ctx, vhost)
            else:
                await self._restart(ctx)

    async def _restart(self, ctx: Context, kind: str = "broker restarts") -> None:
        number = ctx.faults.attempt(kind)
        try:
            before = await verify.broker_instance()
            await cmd("rabbitmqctl", "-q", "stop_app")
            await asyncio.sleep(ctx.rng.uniform(1, 3))
            await cmd("rabbitmqctl", "-q", "start_app")
            await cmd("rabbitmqctl", "-q", "await_startup")
            after = await verify.broker_instance()
        except CommandFailed as exc:
            ctx.faults.miss(kind, str(exc), number)
            return
        ctx.faults.settle(kind, verify.broker_restart_problem(before, after), number)

    async def _drop(self, ctx: Context, vhost: str, kind: str = "connections dropped") -> None:
        number = ctx.faults.attempt(kind)
        try:
            before = {c["pid"] for c in await verify.broker_connections(vhost)}
            await cmd(
                "rabbitmqctl",
                "-q",
                "close_all_connections",
                "-p",
                vhost,
                "chaos: dropping connections",
            )
            deadline = time.monotonic() + 5  # closing is asynchronous in the broker
            while True:
                after = {c["pid"] for c in await verify.broker_connections(vhost)}
                problem = verify.connections_dropped_problem(before, after)
                if problem is None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        except CommandFailed as exc:
            ctx.faults.miss(kind, str(exc), number)
            return
        if ctx.faults.settle(kind, problem, number):
            ctx.faults.saw("broker connections cut", len(before))

    async def heal(self, ctx: Context) -> None:
        await cmd("rabbitmqctl", "-q", "start_app")
        await cmd("rabbitmqctl", "-q", "await_startup")


def _pg_version() -> str:
    import os

    return sorted(os.listdir("/etc/postgresql"))[0]


class DatabaseRestart(Scenario):
    """Restart PostgreSQL (fast shutdown: every connection is cut) under load. A restart counts
    once ``pg_postmaster_start_time()`` moved."""

    name = "database-restart"
    required = ("database restarts",)

    async def inject(self, ctx: Context) -> None:
        if not shutil.which("pg_ctlcluster"):
            raise RuntimeError("database-restart needs pg_ctlcluster (a local PostgreSQL)")
        admin = ctx.env["ORDERFLOW_PG_ADMIN_DSN"]
        kind = "database restarts"
        while await ctx.pause(4, 8):
            number = ctx.faults.attempt(kind)
            try:
                before = await verify.postmaster_started(admin)
                await cmd(
                    "pg_ctlcluster",
                    "--skip-systemctl-redirect",
                    _pg_version(),
                    "main",
                    "restart",
                    "-m",
                    "fast",
                )
                after = await verify.postmaster_started(admin)
            except CommandFailed as exc:
                ctx.faults.miss(kind, str(exc), number)
                continue
            ctx.faults.settle(kind, verify.database_restart_problem(before, after), number)

    async def heal(self, ctx: Context) -> None:
        with contextlib.suppress(CommandFailed):  # "already running" is an exit code 2
            await cmd("pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "start")
        await verify.postmaster_started(ctx.env["ORDERFLOW_PG_ADMIN_DSN"])


def _via(url: str, port: int) -> str:
    """``url`` pointed at ``port`` on the same host (which must be a loopback address)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise ValueError(
            f"the chaos proxy needs a loopback URL with a port, not host {parts.hostname}"
        )
    netloc = parts.netloc.rpartition(":")[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"the chaos proxy needs a URL with a host and a port ({parts.hostname})")
    return parts.hostname, parts.port


class NetworkFaults(Scenario):
    """Services reach the broker and the database through TCP proxies that add latency, reset
    connections and blackhole traffic for a while: by turns on each proxy, each proxy's first
    fault a cut. A fault counts once the proxy saw it act on a connection (reset one, held back
    or delayed bytes); the run also checks that every service connection the broker and the
    database see comes from a proxy."""

    name = "network-faults"
    required = ("connections carried by the amqp proxy", "connections carried by the pg proxy")

    async def before(self, ctx: Context) -> None:
        amqp_host, amqp_port = _target(ctx.env["ORDERFLOW_AMQP_URL"])
        pg_host, pg_port = _target(ctx.env["ORDERFLOW_ORDER_DSN"])
        ctx.proxies["amqp"] = await TcpProxy(target_host=amqp_host, target_port=amqp_port).start()
        ctx.proxies["pg"] = await TcpProxy(target_host=pg_host, target_port=pg_port).start()

    def child_env(self, ctx: Context | None, child: Child) -> dict[str, str]:
        assert ctx is not None
        env = ctx.env
        out = {"ORDERFLOW_AMQP_URL": _via(env["ORDERFLOW_AMQP_URL"], ctx.proxies["amqp"].port)}
        for key in DSN_KEYS.values():
            out[key] = _via(env[key], ctx.proxies["pg"].port)
        return out

    async def inject(self, ctx: Context) -> None:
        turn = 0
        while await ctx.pause(1, 2.5):
            name = ("amqp", "pg")[turn % 2]
            faults = ("reset", "blackhole") if turn < 2 else ("latency", "reset", "blackhole")
            turn += 1
            await self._fault(ctx, name, ctx.rng.choice(faults))

    async def _fault(self, ctx: Context, name: str, fault: str) -> None:
        proxy = ctx.proxies[name]
        kind = f"{fault} on {name}"
        number = ctx.faults.attempt(kind)
        if not await proxy.wait_open(10):
            ctx.faults.miss(kind, "no connection was open through the proxy", number)
            return
        if fault == "reset":
            cut = proxy.reset_all()
            ctx.faults.settle(kind, None if cut else "the proxy had no connection to reset", number)
            return
        # latency and blackhole last 1-2.5 s, longer (up to 5 s more) until bytes were held
        counted = "delayed" if fault == "latency" else "blackholed"
        before = getattr(proxy, counted)
        if fault == "latency":
            proxy.latency = ctx.rng.uniform(0.02, 0.1)
        else:
            proxy.blackhole(True)
        try:
            await asyncio.sleep(ctx.rng.uniform(1, 2.5))
            deadline = time.monotonic() + 5
            while getattr(proxy, counted) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            proxy.heal()
        held = getattr(proxy, counted) > before
        ctx.faults.settle(
            kind, None if held else f"no traffic through the proxy was {counted}", number
        )

    async def heal(self, ctx: Context) -> None:
        for proxy in ctx.proxies.values():
            proxy.heal()
        for name, proxy in ctx.proxies.items():
            ctx.faults.saw(f"connections carried by the {name} proxy", proxy.connections)
            ctx.faults.saw(f"connections reset by the {name} proxy", proxy.resets)
            ctx.faults.saw(f"connections blackholed by the {name} proxy", proxy.blackholed)
            ctx.faults.saw(f"chunks delayed by the {name} proxy", proxy.delayed)
            for problem in verify.proxy_problems(
                name, carried=proxy.connections, cut=proxy.resets + proxy.blackholed
            ):
                ctx.faults.miss(f"cuts by the {name} proxy", problem)
        await self._check_routing(ctx)

    async def _check_routing(self, ctx: Context) -> None:
        """Every service's broker and database connections come from the proxies' sockets
        (waiting up to 15 s for each service to have reconnected after the last fault)."""
        env = ctx.env
        prefix, vhost = env["ORDERFLOW_AMQP_USER_PREFIX"], vhost_of(env["ORDERFLOW_AMQP_URL"])
        databases = {database_of(env[key]): service for service, key in DSN_KEYS.items()}
        deadline = time.monotonic() + 15
        while True:
            amqp: dict[str, list[int]] = {s: [] for s in SERVICES}
            for conn in await verify.broker_connections(vhost):
                user = str(conn.get("user", ""))
                if user.startswith(prefix) and user[len(prefix) :] in amqp:
                    amqp[user[len(prefix) :]].append(int(conn["peer_port"]))
            pg: dict[str, list[int]] = {s: [] for s in SERVICES}
            for row in await verify.database_clients(
                env["ORDERFLOW_PG_ADMIN_DSN"], list(databases)
            ):
                pg[databases[row["datname"]]].append(int(row["client_port"]))
            problems = verify.routing_problems(
                "the broker", amqp, ctx.proxies["amqp"].upstream_ports
            ) + verify.routing_problems("the database", pg, ctx.proxies["pg"].upstream_ports)
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for problem in problems:
            ctx.faults.miss("traffic through the proxies", problem)
        ctx.faults.saw(
            "service connections to the broker via the proxy", sum(map(len, amqp.values()))
        )
        ctx.faults.saw(
            "service connections to the database via the proxy", sum(map(len, pg.values()))
        )


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
    )
}
