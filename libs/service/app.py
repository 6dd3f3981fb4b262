"""The process around a service: connect, declare, relay, consume, stop cleanly.

``serve`` is what a service's ``__main__`` calls with its :class:`ServiceDefinition`. It builds
one pool, one robust broker connection, the relay (in-process by default), the consumer and any
background tasks (the saga's timers), then runs until SIGTERM or SIGINT. Shutdown: stop taking
deliveries, let those in flight finish, stop background tasks and the relay, close connections.
Rows the relay had not published yet stay in the outbox for the next leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.faults import Faults
from libs.messages.registry import Message, MessageRegistry
from libs.messaging.connection import connect as amqp_connect
from libs.messaging.consumer import DeadLetterPublisher, QueueConsumer
from libs.messaging.publisher import Publisher
from libs.messaging.topology import declare_own
from libs.observability.logging import get_logger, setup_logging
from libs.observability.metrics import METRICS, setup_metrics
from libs.observability.tracing import setup_tracing, shutdown_tracing
from libs.outbox.relay import OutboxRelay, Wakeup
from libs.pg.pool import create_pool
from libs.secrets import user_of
from libs.service.context import Handler, Preparer, Refuser
from libs.service.http import Health, HttpServer
from libs.service.runner import MessageRunner
from libs.service.upkeep import Pruner, Sampler, pruners, run_retention, run_sampler
from libs.settings import RelayMode, Settings
from libs.system import ServiceSpec, SystemSpec

log = get_logger(__name__)


@dataclass
class Runtime:
    """What background tasks get: the process's shared resources."""

    pool: Any
    wakeup: Wakeup


Background = Callable[[Runtime], Coroutine[Any, Any, None]]


@dataclass
class ServiceDefinition:
    """One service, as its composition root hands it to the toolkit: its entry in the system's
    description, the message types it speaks, its handlers."""

    name: str
    system: SystemSpec
    registry: MessageRegistry
    handlers: Mapping[type[Message], Handler]
    background: Sequence[Background] = field(default_factory=tuple)
    on_stop: Sequence[Callable[[], None]] = field(default_factory=tuple)
    refusals: Mapping[str, Refuser] = field(default_factory=dict)
    """Per message type, who answers data that fails its schema (instead of dead-lettering)."""
    samplers: Sequence[Sampler] = field(default_factory=tuple)
    """Gauges read from its database by its relay leader, besides the outbox's."""
    pruners: Sequence[Pruner] = field(default_factory=tuple)
    """Rows its retention deletes, besides published outbox rows and old inbox records."""
    prepare: Preparer | None = None
    """Loads, once per transaction, what all its messages need (see :data:`Preparer`)."""

    @property
    def spec(self) -> ServiceSpec:
        return self.system.service(self.name)

    @property
    def queue(self) -> str:
        return self.spec.queue.name

    @property
    def source(self) -> str:
        return f"/{self.system.name}/{self.name}"


async def serve(
    definition: ServiceDefinition,
    *,
    settings: Settings | None = None,
    relay_mode: RelayMode | None = None,
    stopping: asyncio.Event | None = None,
) -> None:
    """Run one service until SIGTERM/SIGINT — or, when ``stopping`` is given (a service run
    inside another program, e.g. a test), until that event is set."""
    settings = settings or Settings()
    mode: RelayMode = relay_mode or settings.relay.mode
    setup_logging(service=definition.name, fmt=settings.log_format, level=settings.log_level)
    setup_tracing(definition.name)
    if settings.metrics:
        setup_metrics(definition.name)
    faults = Faults.from_spec(settings.faults, settings.faults_seed)
    if stopping is None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)

    pool = await create_pool(
        settings.dsn_for(definition.name), max_size=settings.pool_size, name=definition.name
    )
    amqp_url = settings.amqp_url_for(definition.name)
    connection = await amqp_connect(
        amqp_url, name=definition.name, ssl_context=settings.amqp_ssl_context()
    )
    connection.reconnect_callbacks.add(lambda *_: METRICS.reconnects.add(1))
    channel = await connection.channel()
    await declare_own(
        channel,
        queues=[definition.spec.queue],
        publishes=definition.spec.publishes,
        replicas=settings.quorum_replicas(),
    )
    await channel.close()
    # user_id on every message: the broker refuses a message whose sender claims another name
    publisher = Publisher(
        connection, confirm_timeout=settings.relay.confirm_timeout, user_id=user_of(amqp_url)
    )
    relay: OutboxRelay | None = None
    tasks: list[asyncio.Task[None]] = []
    if mode in ("in-process", "only"):
        relay = OutboxRelay(
            name=definition.name,
            dsn=settings.dsn_for(definition.name),
            publisher=publisher,
            settings=settings.relay,
            faults=faults,
        )
        tasks.append(asyncio.create_task(relay.run(), name="relay"))
    wakeup = Wakeup(relay)
    runtime = Runtime(pool, wakeup)
    consumers: list[QueueConsumer] = []
    runner: MessageRunner | None = None
    if mode != "only":
        runner = MessageRunner(
            consumer=definition.name,
            queue=definition.queue,
            source=definition.source,
            pool=pool,
            registry=definition.registry,
            handlers=definition.handlers,
            dead_letters=DeadLetterPublisher(publisher, service=definition.name),
            wakeup=wakeup,
            settings=settings.consumer,
            faults=faults,
            senders=senders(settings, definition),
            refusals=definition.refusals,
            prepare=definition.prepare,
        )
        # Batch mode: several workers, each on its own channel (so that its multiple=True ack
        # can only cover its own deliveries), share the pool: batching's economy with the
        # parallelism of several database connections. Per-message mode: one channel, with
        # `prefetch` deliveries handled concurrently.
        workers = settings.consumer.workers if settings.consumer.batch else 1
        for _ in range(workers):
            consumer = QueueConsumer(
                connection,
                queue=definition.queue,
                prefetch=max(1, settings.consumer.prefetch // workers),
                process=runner,
                process_batch=runner.process_batch if settings.consumer.batch else None,
                max_batch=settings.consumer.max_batch,
            )
            await consumer.start()
            consumers.append(consumer)
        tasks += [asyncio.create_task(b(runtime), name="background") for b in definition.background]
    batch_workers = [c.worker for c in consumers if c.worker is not None]
    health = _health(connection, consumers, relay, tasks, batch_workers)
    probes = asyncio.Event()  # set when stopping: ends the probes, sampler and retention
    tasks.append(asyncio.create_task(health.probe_database(pool, probes), name="probe"))
    if relay is not None:
        tasks.append(
            asyncio.create_task(
                run_sampler(
                    pool, relay, definition.samplers, probes, interval=settings.metrics_interval
                ),
                name="sampler",
            )
        )
        cleaners = pruners(settings.retention, definition.pruners)
        tasks.append(
            asyncio.create_task(
                run_retention(pool, relay, cleaners, settings.retention, probes), name="retention"
            )
        )
    http: HttpServer | None = None
    if settings.http_port is not None:
        http = HttpServer(health, host=settings.http_host, port=settings.http_port)
        port = await http.start(settings.http_port_file)
        print(f"{definition.name} http {port}", flush=True)  # noqa: T201 - read by the supervisor
    log.info(
        "service.started",
        relay=mode,
        queue=definition.queue,
        pid=os.getpid(),
        batch=settings.consumer.batch,
        workers=len(consumers),
    )
    _tune_gc(settings.gc_threshold)
    ready_file = settings.ready_file  # for container health checks
    if ready_file:
        _mark_ready(ready_file)
    print(f"{definition.name} ready", flush=True)  # noqa: T201 - the supervisor waits for this line
    await stopping.wait()

    log.info("service.stopping")
    health.stopping = True
    probes.set()
    if ready_file:
        _mark_ready(ready_file, ready=False)
    if runner is not None:
        runner.stop()
    # Every step is bounded: a broker or database that is gone must not keep the process alive.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.stop(grace=20) for c in consumers)), 25)
    for stop in definition.on_stop:
        stop()
    if relay is not None:
        relay.stop()
    for task in tasks:
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
    if http is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http.stop(), 5)
    for closing in (publisher.close(), connection.close(), pool.close()):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(closing, 5)
    shutdown_tracing()
    log.info("service.stopped")


def _health(
    connection: Any,
    consumers: list[QueueConsumer],
    relay: OutboxRelay | None,
    tasks: list[asyncio.Task[None]],
    batch_workers: list[asyncio.Task[None]],
) -> Health:
    """The readiness checks of a service process (see :mod:`libs.service.http`); its liveness
    watches ``tasks`` (the list itself: tasks started later count too) and the batch workers."""
    health = Health(tasks=tasks, workers=batch_workers)

    def database() -> str | None:
        return None if health.database_ok else "the database did not answer the last probe"

    def broker() -> str | None:
        up = connection.connected.is_set() and not connection.is_closed
        return None if up else "not connected to the broker"

    def consuming() -> str | None:
        stopped = sum(not c.running for c in consumers)
        return f"{stopped} of {len(consumers)} consumers not running" if stopped else None

    def relaying() -> str | None:
        alive = any(t.get_name() == "relay" and not t.done() for t in tasks)
        return None if alive else "the relay is not running"

    health.checks.update({"database": database, "broker": broker, "consumers": consuming})
    if relay is not None:
        health.checks["relay"] = relaying
    return health


def senders(settings: Settings, definition: ServiceDefinition) -> dict[str, frozenset[str]]:
    """Per handled type, the broker users it is accepted from (public types: not listed)."""
    operator = settings.operator_user()
    allowed: dict[str, frozenset[str]] = {}
    for model in definition.handlers:
        spec = definition.registry.spec_of(model)
        users = definition.system.allowed_senders(
            spec.type, spec.exchange, user_of=settings.service_login, operator=operator
        )
        if users is not None:
            allowed[spec.type] = users
    return allowed


def _tune_gc(threshold: int) -> None:
    """Fewer, cheaper collections once started: what is alive now (modules, pools, prepared
    statements, the registry) lives as long as the process, so it is moved out of the
    collector's way, and the young generation is collected every ``threshold`` allocations."""
    gc.collect()
    gc.freeze()
    if threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)


def _mark_ready(path: Path, *, ready: bool = True) -> None:
    """Create or remove the file a container health check looks for (tiny and rare: sync)."""
    if ready:
        path.write_text(str(os.getpid()))
    else:
        path.unlink(missing_ok=True)


def main(definition: ServiceDefinition) -> None:
    """Entry point of ``python -m <service>``; uvloop when it is installed (it is, by default)."""
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        runner.run(serve(definition))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not Settings().uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
