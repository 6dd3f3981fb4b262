"""A service and a one-step saga of someone else's system, built from the toolkit alone.

The "greeter" system is described in one entry (its own SystemSpec), uses only the toolkit's
public names (libs.*, nothing of orderflow's contracts, services or tools), and runs end to end
against the real broker and database in a vhost and databases of its own: a public
GreetingRequested starts the saga, which sends Greet to greeter_svc, whose Greeted completes it.
docs/extending.md walks through the same code.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import aio_pika

from libs.messages import CONTENT_TYPE, Command, Event, MessageRegistry, codec
from libs.messaging import Binding, QueueSpec, declare
from libs.pg import Migration, connection
from libs.saga import SagaCoordinator, SagaDefinition, Step
from libs.saga import store as saga_store
from libs.service import HandlerContext, Runtime, ServiceDefinition, serve
from libs.settings import Settings
from libs.system import ServiceSpec, SystemSpec
from libs.testing.infra import temporary_database, temporary_vhost
from tests.conftest import ADMIN_DSN, AMQP_BASE


# -- the contract: four message types ------------------------------------------------------
class GreetingRequested(Event):
    TYPE = "front.greeting_requested.v1"
    request_id: str
    name: str


class Greet(Command):
    TYPE = "greeting.greet.v1"
    request_id: str
    name: str


class Greeted(Event):
    TYPE = "greeting.greeted.v1"
    request_id: str
    text: str


class GiveUp(Command):
    TYPE = "greeting.give_up.v1"
    request_id: str
    reason: str


class GaveUp(Event):
    TYPE = "greeting.gave_up.v1"
    request_id: str


REGISTRY = MessageRegistry(GreetingRequested, Greet, Greeted, GiveUp, GaveUp)

# -- the one entry: the system's description -----------------------------------------------
SYSTEM = SystemSpec(
    name="greeter",
    exchanges=("front.events", "greeting.commands", "greeting.events"),
    public_types=frozenset({GreetingRequested.TYPE}),
    services=(
        ServiceSpec(
            "greeter_svc",
            QueueSpec("greeter_svc.commands", (Binding("greeting.commands", "#"),)),
            publishes=("greeting.events",),
            tables=("greetings",),
        ),
        ServiceSpec(
            "hello_saga",
            QueueSpec(
                "hello_saga.events",
                (Binding("front.events", "#"), Binding("greeting.events", "#")),
            ),
            publishes=("greeting.commands",),
            tables=("saga_log", "saga_instance"),
        ),
    ),
)

# -- greeter_svc: one handler, one table ---------------------------------------------------
GREETER_TABLES = Migration(
    "greeter",
    1,
    "greetings",
    "CREATE TABLE greetings (request_id text PRIMARY KEY, text text NOT NULL)",
)


async def greet(message: Greet, ctx: HandlerContext) -> None:
    text = f"hello, {message.name}"
    await ctx.conn.execute(
        "INSERT INTO greetings VALUES ($1, $2) ON CONFLICT DO NOTHING", message.request_id, text
    )
    ctx.send(
        Greeted(request_id=message.request_id, text=text),
        aggregate_type="greeting",
        aggregate_id=message.request_id,
    )


def greeter() -> ServiceDefinition:
    return ServiceDefinition(
        name="greeter_svc", system=SYSTEM, registry=REGISTRY, handlers={Greet: greet}
    )


# -- hello_saga: one step ------------------------------------------------------------------
HELLO = SagaDefinition(
    name="hello",
    start=GreetingRequested,
    data=lambda event: {"request_id": event.request_id, "name": event.name},  # type: ignore[attr-defined]
    key=lambda message: message.request_id,  # type: ignore[attr-defined]
    steps=(
        Step(
            name="greet",
            command=Greet,
            action=lambda d: Greet(request_id=d["request_id"], name=d["name"]),
            success=Greeted,
            deadline=5.0,
        ),
    ),
    failure_command=GiveUp,
    failure_action=lambda d, reason: GiveUp(request_id=d["request_id"], reason=reason),
    failure_reply=GaveUp,
)


def hello_saga() -> ServiceDefinition:
    coordinator = SagaCoordinator(HELLO, registry=REGISTRY, source="/greeter/hello_saga")

    async def timers(runtime: Runtime) -> None:
        await coordinator.run_timers(runtime.pool, runtime.wakeup)

    return ServiceDefinition(
        name="hello_saga",
        system=SYSTEM,
        registry=REGISTRY,
        handlers=dict.fromkeys(HELLO.replies(), coordinator.handle),
        background=(timers,),
        on_stop=(coordinator.stop,),
    )


# -- the test ------------------------------------------------------------------------------
async def test_a_new_system_built_from_the_toolkit_alone_runs_end_to_end() -> None:
    async with AsyncExitStack() as stack:
        amqp_url = await stack.enter_async_context(temporary_vhost(AMQP_BASE, prefix="ofe2e"))
        greeter_db = await stack.enter_async_context(
            temporary_database(ADMIN_DSN, prefix="ofe2e", migrations=[GREETER_TABLES])
        )
        saga_db = await stack.enter_async_context(
            temporary_database(ADMIN_DSN, prefix="ofe2e", migrations=saga_store.migrations())
        )
        settings = Settings(
            amqp_url=amqp_url,
            amqp_service_users=False,  # every process logs in as the operator here
            databases={"greeter": greeter_db, "hello_saga": saga_db},
            pg_admin_dsn=ADMIN_DSN,
        )
        connection = await aio_pika.connect(amqp_url)
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        await declare(channel, SYSTEM.topology)  # what `setup` does, from the description
        watch = await channel.declare_queue(exclusive=True)
        await watch.bind("greeting.events", "#")

        stopping = asyncio.Event()
        services = [
            asyncio.create_task(serve(d, settings=settings, stopping=stopping))
            for d in (greeter(), hello_saga())
        ]
        try:
            await asyncio.sleep(1.0)  # both consuming
            request_id = str(uuid.uuid4())
            envelope = REGISTRY.envelope(
                GreetingRequested(request_id=request_id, name="Ada"),
                source="/greeter/test",
                subject=request_id,
            )
            exchange = await channel.get_exchange("front.events")
            await exchange.publish(
                aio_pika.Message(
                    codec.encode(envelope),
                    content_type=CONTENT_TYPE,
                    message_id=envelope.id,
                    type=envelope.type,
                ),
                routing_key=envelope.type,
            )
            message = await asyncio.wait_for(_next(watch), 20)
            greeted = codec.decode(
                message.body, content_type=message.content_type, max_bytes=64 * 1024
            )
            assert greeted.type == Greeted.TYPE and greeted.data["text"] == "hello, Ada"
            status = None
            for _ in range(100):
                status = await _scalar(
                    saga_db,
                    "SELECT status FROM saga_instance WHERE saga = 'hello' AND id = $1",
                    request_id,
                )
                if status == "COMPLETED":
                    break
                await asyncio.sleep(0.1)
            assert status == "COMPLETED"
            assert await _scalar(greeter_db, "SELECT text FROM greetings") == "hello, Ada"
            assert await _scalar(greeter_db, "SELECT count(*) FROM outbox") == 1
        finally:
            stopping.set()
            await asyncio.wait_for(asyncio.gather(*services), 60)


async def _next(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            return message
    raise AssertionError("the watch queue closed")


async def _scalar(dsn: str, query: str, *args: object) -> object:
    async with connection(dsn) as conn:
        return await conn.fetchval(query, *args)
