"""Services' connections on a three-node cluster: a client whose node is killed moves to another
node and resumes consuming and publishing; quorum queues are replicated on every node."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import aio_pika
import pytest

from libs.messaging.admin import LOCAL_API, ManagementApi, with_vhost
from libs.messaging.connection import ClusterConnection, connect
from libs.messaging.topology import cluster_arguments
from libs.testing.infra import temporary_vhost
from orderflow.chaos.cluster import alive, cluster_nodes

from .conftest import cluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
API = ManagementApi(node="of1@localhost")


def leaders(vhost: str) -> dict[str, tuple[str, list[str]]]:
    out = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "-n",
            "of1@localhost",
            "list_queues",
            "-p",
            vhost,
            "name",
            "leader",
            "members",
            "--formatter",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {q["name"]: (q["leader"], q["members"]) for q in json.loads(out)}


async def test_a_client_whose_node_dies_moves_on_and_loses_no_message(cluster_url: str) -> None:
    assert LOCAL_API.node is None
    async with temporary_vhost(with_vhost(cluster_url, "/"), prefix="oftest", api=API) as url:
        vhost = url.split(",")[0].rsplit("/", 1)[1]
        consumer = await connect(url, name="test-consumer")
        assert isinstance(consumer, ClusterConnection)
        channel = await consumer.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.declare_queue(
            "work", durable=True, arguments={"x-queue-type": "quorum", **cluster_arguments(3)}
        )
        _, members = leaders(vhost)["work"]
        assert len(members) == 3  # replicated on every node
        got: list[str] = []

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message.body.decode())
            await message.ack()

        await queue.consume(take)
        publisher = await connect(url, name="test-publisher")
        send = await publisher.channel(publisher_confirms=True)

        async def publish(text: str) -> None:
            for _ in range(100):  # a publish without a confirm is sent again, as the relay does
                try:
                    await send.default_exchange.publish(
                        aio_pika.Message(text.encode(), delivery_mode=2),
                        routing_key="work",
                        timeout=5,
                    )
                    return
                except Exception:
                    await asyncio.sleep(0.2)
            raise AssertionError(f"{text} never confirmed")

        for i in range(20):
            await publish(f"before-{i}")
        # kill the consumer's node: it is not the one whose loss the queue cannot survive
        victim = next(n for n in cluster_nodes(url) if str(n.port) in consumer.node)
        pid = victim.pid()
        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        for _ in range(100):
            if not alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not alive(pid), "the node was not killed"
        try:
            for i in range(20):
                await publish(f"after-{i}")
            for _ in range(300):
                if {f"after-{i}" for i in range(20)} <= set(got):
                    break
                await asyncio.sleep(0.1)
            assert str(victim.port) not in consumer.node  # it moved on
            assert {f"before-{i}" for i in range(20)} | {f"after-{i}" for i in range(20)} <= set(
                got
            ), f"missing: {sorted(set(f'after-{i}' for i in range(20)) - set(got))[:5]}"
        finally:
            cluster("start-node", str(victim.number))
            await publisher.close()
            await consumer.close()


def test_a_cluster_url_names_its_nodes_and_quorum_queues_get_three_replicas() -> None:
    from libs.settings import Settings

    one = Settings(amqp_url="amqp://guest:guest@127.0.0.1:5672/orderflow")
    three = Settings(amqp_url=",".join(f"amqp://g:g@127.0.0.1:568{i}/v" for i in (1, 2, 3)))
    assert one.quorum_replicas() == 1 and three.quorum_replicas() == 3
    assert cluster_arguments(1) == {}
    assert cluster_arguments(3)["x-quorum-initial-group-size"] == 3
    assert [n.number for n in cluster_nodes(three.amqp_url)] == [1, 2, 3]
