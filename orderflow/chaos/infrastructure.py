"""Scenarios that break what the services stand on: the broker restarted, the database restarted,
connections cut and delayed through TCP proxies."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from urllib.parse import urlsplit, urlunsplit

from libs.messaging.admin import vhost_of
from libs.pg.admin import database_of
from orderflow.chaos import verify
from orderflow.chaos.proxy import TcpProxy
from orderflow.chaos.scenario import DSN_KEYS, SERVICES, Context, Scenario
from orderflow.chaos.verify import CommandFailed, cmd
from orderflow.supervisor import Child


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
        # a drop first (four rabbitmqctl calls: it can take a short window), then a restart
        async for turn in ctx.turns(1, 3, at_least=2):
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
        async for turn in ctx.turns(1, 2.5, at_least=2):  # each proxy's first fault a cut
            name = ("amqp", "pg")[(turn - 1) % 2]
            faults = ("reset", "blackhole") if turn <= 2 else ("latency", "reset", "blackhole")
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
