"""A broker cluster under fire: the node that leads the busiest queues killed (SIGKILL) and
restarted, by turns with a node's connections cut through a TCP proxy (`broker-node-kill`).

It runs on the local cluster of `scripts/cluster.sh` (nodes ``ofN@localhost`` on port 5680+N,
their pid files under ``ORDERFLOW_CLUSTER_DIR``): ``ORDERFLOW_AMQP_URL`` names its nodes and
``ORDERFLOW_RABBITMQ_NODE`` the node `rabbitmqctl` administers. One node is down at a time, so
every quorum queue keeps a majority. A kill counts once the node's pid is gone; a restart once a
new pid answers as a cluster member; a cut once the proxy reset a connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from libs.messaging.admin import vhost_of
from libs.messaging.connection import nodes_of
from orderflow.chaos.proxy import TcpProxy
from orderflow.chaos.scenario import Context, Scenario
from orderflow.chaos.verify import CommandFailed, cmd
from orderflow.supervisor import Child

__all__ = ["BrokerNodeKill", "Node", "cluster_nodes"]

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"
FIRST_PORT = 5680  # node N listens on 5680 + N


@dataclass(frozen=True)
class Node:
    number: int
    url: str

    @property
    def name(self) -> str:
        return f"of{self.number}@localhost"

    @property
    def port(self) -> int:
        return FIRST_PORT + self.number

    def pid(self) -> int | None:
        path = Path(os.environ.get("ORDERFLOW_CLUSTER_DIR", "/var/tmp/orderflow-cluster"))
        try:
            return int((path / f"of{self.number}" / "pid").read_text().strip())
        except (OSError, ValueError):
            return None


def cluster_nodes(url: str) -> list[Node]:
    """The nodes of `scripts/cluster.sh` a broker URL names (by their ports)."""
    found = []
    for node_url in nodes_of(url):
        port = urlsplit(node_url).port or 5672
        if port > FIRST_PORT:
            found.append(Node(port - FIRST_PORT, node_url))
    return found


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def rabbitmqctl(node: Node, *args: str) -> str:
    return await cmd("rabbitmqctl", "-q", "-n", node.name, *args)


class BrokerNodeKill(Scenario):
    name = "broker-node-kill"
    required = ("broker node kills", "broker node restarts", "connections cut by the node proxy")

    async def before(self, ctx: Context) -> None:
        nodes = cluster_nodes(ctx.env["ORDERFLOW_AMQP_URL"])
        if len(nodes) < 3:
            raise RuntimeError(
                "broker-node-kill runs on a three-node cluster: `scripts/cluster.sh start`, then "
                "ORDERFLOW_AMQP_URL=$(scripts/cluster.sh url) ORDERFLOW_RABBITMQ_NODE=of1@localhost"
            )
        ctx.extra["nodes"] = nodes
        ctx.extra["node kills at"] = []
        # every node is reached through a proxy, whose connections are cut now and then
        for node in nodes:
            ctx.proxies[node.name] = await TcpProxy(
                target_host="127.0.0.1", target_port=node.port
            ).start()

    def child_env(self, ctx: Context | None, child: Child) -> dict[str, str]:
        assert ctx is not None
        nodes: list[Node] = ctx.extra["nodes"]
        urls = []
        for node in nodes:
            parts = urlsplit(node.url)
            netloc = parts.netloc.rpartition(":")[0] + f":{ctx.proxies[node.name].port}"
            urls.append(urlunsplit(parts._replace(netloc=netloc)))
        # each child starts on another node, so the services spread over the cluster
        shift = sum(map(ord, child.name)) % len(urls)
        return {"ORDERFLOW_AMQP_URL": ",".join(urls[shift:] + urls[:shift])}

    async def inject(self, ctx: Context) -> None:
        async for turn in ctx.turns(1, 2):  # a cut first (it is quick), then two kills, …
            if ctx.remaining() <= 5:  # no kill in the last seconds: later orders show recovery
                break
            if turn % 3 == 1:
                self._cut(ctx)
            else:
                await self._kill_and_restart(ctx)

    def _cut(self, ctx: Context) -> None:
        """Reset every connection of the proxy that carries the most (the services' links to
        one node): they reconnect to the next node."""
        kind = "connections cut by the node proxy"
        number = ctx.faults.attempt(kind)
        proxy = max(ctx.proxies.values(), key=lambda p: p.open_connections)
        cut = proxy.reset_all()
        ctx.faults.settle(kind, None if cut else "no connection went through the proxies", number)

    async def busiest_leader(self, ctx: Context) -> Node | None:
        """The node leading the queues with the most messages (ready and unacked) now."""
        nodes: list[Node] = ctx.extra["nodes"]
        via = next((n for n in nodes if alive(n.pid())), None)
        if via is None:
            return None
        out = await rabbitmqctl(
            via,
            "list_queues",
            "-p",
            vhost_of(ctx.env["ORDERFLOW_AMQP_URL"]),
            "name",
            "leader",
            "messages",
            "--formatter",
            "json",
        )
        load: Counter[str] = Counter()
        for queue in json.loads(out or "[]"):
            leader = str(queue.get("leader") or "")
            load[leader] += 1 + int(queue.get("messages") or 0)
        for name, _ in load.most_common():
            for node in nodes:
                if node.name == name:
                    return node
        return None

    async def _kill_and_restart(self, ctx: Context) -> None:
        try:
            victim = await self.busiest_leader(ctx)
        except CommandFailed as exc:
            ctx.faults.miss("broker node kills", f"the queues' leaders were not listed: {exc}")
            return
        if victim is None:
            return
        number = ctx.faults.attempt("broker node kills")
        pid = victim.pid()
        if not alive(pid):
            ctx.faults.miss("broker node kills", f"{victim.name} was not running", number)
            return
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 10
        while alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if alive(pid):
            ctx.faults.miss("broker node kills", f"{victim.name} (pid {pid}) still runs", number)
            return
        ctx.faults.saw("broker node kills")
        ctx.faults.saw(f"broker node kills:{victim.name}")
        ctx.extra["node kills at"].append(killed_at)
        await asyncio.sleep(ctx.rng.uniform(1, 3))
        await self._restart(ctx, victim, pid)

    async def _restart(self, ctx: Context, node: Node, old_pid: int | None) -> None:
        number = ctx.faults.attempt("broker node restarts")
        try:
            await cmd(str(SCRIPT), "start-node", str(node.number), timeout=90)
            await rabbitmqctl(node, "await_startup")
        except CommandFailed as exc:
            ctx.faults.miss("broker node restarts", f"{node.name}: {exc}", number)
            return
        new_pid = node.pid()
        problem = None
        if not alive(new_pid) or new_pid == old_pid:
            problem = f"{node.name}: no new process (pid {old_pid} -> {new_pid})"
        ctx.faults.settle("broker node restarts", problem, number)

    async def heal(self, ctx: Context) -> None:
        for proxy in ctx.proxies.values():
            proxy.heal()
        for node in ctx.extra["nodes"]:
            if not alive(node.pid()):
                await self._restart(ctx, node, None)
        carried = sum(p.connections for p in ctx.proxies.values())
        ctx.faults.saw("connections carried by the node proxies", carried)
