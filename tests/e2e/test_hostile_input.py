"""The hostile corpus against the real services, in batch and one-by-one mode.

Every kind arrives in more copies than the prefetch window, from a stranger's broker account, so a
reader that leaks a prefetch slot per bad delivery stops the queue and the ordinary orders placed
afterwards never complete. Each kind must end as the corpus says: dead-lettered with its reason,
or answered on ``order.events``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from contextlib import AbstractAsyncContextManager

import aio_pika
import pytest

from libs.messaging import deadletters
from orderflow.hostile import ANSWER, CONTENT_TYPE, CORPUS, PLACE, HostileCase, event, order
from orderflow.hostile import stranger as hostile_stranger
from tests.e2e.conftest import System, cli, running_system

pytestmark = pytest.mark.timeout(600)
COPIES = 130  # more than the prefetch window of 128
LARGE_COPIES = 10  # bodies over 50 KB: the same code path as their small siblings
DLQ = "order_svc.commands.dlq"


def stranger(system: System) -> AbstractAsyncContextManager[aio_pika.abc.AbstractChannel]:
    """A client's broker account: it may publish to order.commands and nothing else."""
    return hostile_stranger(
        system.env["ORDERFLOW_AMQP_URL"], prefix=system.env["ORDERFLOW_AMQP_USER_PREFIX"]
    )


def copies_of(case: HostileCase) -> int:
    size = len(case.build(str(uuid.uuid4())).body)
    return LARGE_COPIES if size > 50_000 else COPIES


async def publish_corpus(
    channel: aio_pika.abc.AbstractChannel,
) -> tuple[Counter[str], set[str]]:
    """Publish every case; (dead letters expected per case, order ids that must be answered)."""
    exchange = await channel.get_exchange("order.commands", ensure=False)
    expected_dead: Counter[str] = Counter()
    answered: set[str] = set()
    for case in CORPUS:
        sends = []
        for _ in range(copies_of(case)):
            message = case.build(str(uuid.uuid4()))
            if case.expect == ANSWER:
                answered.add(json.loads(message.body)["data"]["order_id"])
            else:
                expected_dead[case.name] += 1
            sends.append(
                exchange.publish(
                    message.message(str(uuid.uuid4())), routing_key=message.routing_key
                )
            )
        await asyncio.gather(*sends)
    return expected_dead, answered


async def watch_answers(system: System) -> tuple[aio_pika.abc.AbstractQueue, dict[str, str]]:
    connection = system.client._connection  # the operator's connection of the test client
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind("order.events", routing_key="order.order_rejected.v1")
    seen: dict[str, str] = {}

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        data = json.loads(message.body)["data"]
        seen[data["order_id"]] = data["reason"]
        await message.ack()

    await queue.consume(on_message)
    return queue, seen


@pytest.mark.parametrize("batch", ["true", "false"], ids=["batch", "one-by-one"])
async def test_no_hostile_input_stalls_a_consumer_and_each_ends_as_the_corpus_says(
    batch: str,
) -> None:
    async with (
        running_system(extra_env={"ORDERFLOW_CONSUMER__BATCH": batch}) as system,
        stranger(system) as channel,
    ):
        pids = {c.name: c.process.pid for c in system.supervisor.children if c.process}
        _, answers = await watch_answers(system)
        expected_dead, must_answer = await publish_corpus(channel)

        # ordinary orders placed behind several thousand bad messages still complete
        good = [await system.place("alice", ("WIDGET", 1, "9.99")) for _ in range(5)]
        await system.wait(good, timeout=180)
        assert {system.status(o) for o in good} == {"CONFIRMED"}

        total_dead = sum(expected_dead.values())
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            depth, _ = await deadletters.depth(system.client._connection, DLQ)
            if depth >= total_dead and must_answer <= answers.keys():
                break
            await asyncio.sleep(1)
        depth, _ = await deadletters.depth(system.client._connection, DLQ)
        assert depth == total_dead, f"{depth} dead letters, expected {total_dead}"
        missing = must_answer - answers.keys()
        assert not missing, (
            f"{len(missing)} refused orders never answered, e.g. {list(missing)[:3]}"
        )

        letters = await deadletters.list_dead_letters(
            system.client._connection, [DLQ], limit=total_dead + 10
        )
        classes = Counter(letter.error_class for letter in letters)
        expected: Counter[str] = Counter()
        for case in CORPUS:
            expected[case.error_class] += expected_dead[case.name]
        assert classes == expected  # each kind died of its own reason, one for one
        assert "Forged" not in classes  # a client cannot write our reason headers
        assert all(letter.error for letter in letters), "every dead letter says why"
        # no service crashed or restarted
        assert {c.name: c.process.pid for c in system.supervisor.children if c.process} == pids
        assert all(c.alive for c in system.supervisor.children)


async def test_a_refused_order_never_rejects_someone_elses_order() -> None:
    async with running_system() as system, stranger(system) as channel:
        victim = await system.place("alice", ("WIDGET", 1, "9.99"))
        await system.wait([victim])
        exchange = await channel.get_exchange("order.commands", ensure=False)
        body = json.dumps(
            event(str(uuid.uuid4()), data=order(order_id=victim, items="not a list"))
        ).encode()
        await exchange.publish(aio_pika.Message(body, content_type=CONTENT_TYPE), routing_key=PLACE)
        depth = 0
        for _ in range(60):
            depth, _ = await deadletters.depth(system.client._connection, DLQ)
            if depth:
                break
            await asyncio.sleep(0.5)
        assert depth == 1, "garbage naming an existing order is dead-lettered, not answered"
        assert (
            await system.scalar("order_svc", "SELECT status FROM orders WHERE id = $1", victim)
            == "CONFIRMED"
        )


async def test_replay_never_launders_an_impostors_message_through_the_operator() -> None:
    """ApproveOrder is the saga's to send. A stranger's one is dead-lettered as an impostor;
    `orderflow dlq replay` (the operator, whom every consumer trusts) must refuse to send it
    on, also when its AMQP type claims the public PlaceOrder."""
    async with running_system() as system, stranger(system) as channel:
        exchange = await channel.get_exchange("order.commands", ensure=False)
        approve = "order.approve_order.v1"
        body = json.dumps(
            event(str(uuid.uuid4()), type=approve, data={"order_id": str(uuid.uuid4())})
        )
        for amqp_type in (approve, PLACE):
            message = aio_pika.Message(body.encode(), content_type=CONTENT_TYPE, type=amqp_type)
            await exchange.publish(message, routing_key=amqp_type)
        letters: list[deadletters.DeadLetter] = []
        for _ in range(60):
            letters = await deadletters.list_dead_letters(system.client._connection, [DLQ])
            if len(letters) == 2:
                break
            await asyncio.sleep(0.5)
        assert [letter.error_class for letter in letters] == ["ImpostorMessage"] * 2
        code, out = await cli(system.env, "dlq", "replay", "--all", "--queue", DLQ)
        assert code == 1
        assert "replayed 0 dead letter(s)" in out
        assert "an impostor's message is never replayed" in out
        assert "is not its event's type" in out
        depth, _ = await deadletters.depth(system.client._connection, DLQ)
        assert depth == 2  # both stay where they are
