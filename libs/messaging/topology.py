"""One declarative description of exchanges and queues, declared idempotently.

Every consumer queue is a durable quorum queue with ``x-delivery-limit`` (a message that crashes
its consumer again and again stops coming back) and dead-letters, at least once, to its own
``<queue>.dlq`` through the direct exchange :data:`DEAD_LETTER_EXCHANGE` (the broker does that
itself; no user publishes there). The consumer publishes poison messages itself, with headers
saying why, through an exchange of the queue's own, ``orderflow.dead-letter.<queue>``, bound to
that queue's dead-letter queue only: a service may write to its own and to no other, so it cannot
drop a forged letter into another service's dead-letter queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel

from libs.errors import ConfigurationError

DEAD_LETTER_EXCHANGE = "orderflow.dead-letter"
DLQ_SUFFIX = ".dlq"


def dead_letter_exchange_of(queue: str) -> str:
    return f"{DEAD_LETTER_EXCHANGE}.{queue}"


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic exchange delivers ``routing_key`` through a binding with ``pattern``
    (``*`` one word, ``#`` zero or more words)."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A consumer's queue, named ``<service>.<purpose>``."""

    name: str
    bindings: tuple[Binding, ...]
    # A queue argument: it cannot change once the queue exists. 10, not fewer: a consumer killed
    # with N prefetched deliveries returns all N, and each return counts as a delivery.
    delivery_limit: int = 10

    @property
    def dead_letter_queue(self) -> str:
        return self.name + DLQ_SUFFIX

    @property
    def dead_letter_exchange(self) -> str:
        """Where this queue's consumer publishes its dead letters (bound to its DLQ only)."""
        return dead_letter_exchange_of(self.name)

    def arguments(self, replicas: int = 1) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.name,
            # at-least-once dead-lettering needs reject-publish overflow (RabbitMQ >= 3.10)
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            **cluster_arguments(replicas),
        }


def cluster_arguments(replicas: int) -> dict[str, Any]:
    """On a cluster, a quorum queue's replicas (its initial group size) and its leader placed
    on the node with the fewest leaders; nothing on one node (where a queue declared before
    keeps the arguments it had)."""
    if replicas <= 1:
        return {}
    return {"x-quorum-initial-group-size": replicas, "x-queue-leader-locator": "balanced"}


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[str, ...]
    queues: tuple[QueueSpec, ...] = field(default=())

    def queue(self, name: str) -> QueueSpec:
        for spec in self.queues:
            if spec.name == name:
                return spec
        raise KeyError(f"no queue {name!r} in the topology")

    def dead_letter_queues(self) -> list[str]:
        return [q.dead_letter_queue for q in self.queues]

    def with_queues(self, queues: Iterable[QueueSpec]) -> Topology:
        return Topology(self.exchanges, (*self.queues, *queues))


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The broker's refusals of a declare, as errors that say how to fix them."""
    try:
        yield
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise ConfigurationError(
            f"{exc}: declare the topology first with `orderflow setup`"
        ) from None
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigurationError(
            f"the broker refused the topology: {exc}. An existing queue or exchange has other "
            "arguments; drain it, delete it (e.g. `rabbitmqctl delete_queue -p <vhost> <queue>`) "
            "and run `orderflow setup` again"
        ) from None
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise ConfigurationError(
            f"the broker refused an operation: {exc}; `orderflow setup` grants each service "
            "user its permissions"
        ) from None


async def declare(channel: AbstractChannel, topology: Topology, *, replicas: int = 1) -> None:
    """Declare everything; declaring twice with the same arguments changes nothing. ``replicas``:
    each quorum queue's group size (1 on one node, up to 3 on a cluster).

    A queue or exchange that exists with other arguments raises ConfigurationError saying which
    and how to fix it (the broker closes the channel on such a declare).
    """
    with _refusals():
        await _declare(channel, topology, replicas)


async def _declare(channel: AbstractChannel, topology: Topology, replicas: int) -> None:
    dlx = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for name in topology.exchanges:
        await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    for spec in topology.queues:
        dlq = await channel.declare_queue(
            spec.dead_letter_queue,
            durable=True,
            arguments={"x-queue-type": "quorum", **cluster_arguments(replicas)},
        )
        await dlq.bind(dlx, routing_key=spec.name)
        await _declare_own_dlx(channel, spec, dlq)
        queue = await channel.declare_queue(
            spec.name, durable=True, arguments=spec.arguments(replicas)
        )
        for binding in spec.bindings:
            await queue.bind(binding.exchange, routing_key=binding.routing_key)


async def declare_own(
    channel: AbstractChannel,
    *,
    queues: Iterable[QueueSpec],
    publishes: Iterable[str],
    replicas: int = 1,
) -> None:
    """What one service declares at start with least privilege: its queues (and their bindings)
    and the exchanges it publishes to. Exchanges it only reads from, and the dead-letter
    exchange, must exist already (``orderflow setup``): they are checked passively.
    """
    with _refusals():
        for name in publishes:
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        await channel.declare_exchange(DEAD_LETTER_EXCHANGE, passive=True)
        for spec in queues:
            for binding in spec.bindings:
                await channel.declare_exchange(binding.exchange, passive=True)
            dlq = await channel.declare_queue(
                spec.dead_letter_queue,
                durable=True,
                arguments={"x-queue-type": "quorum", **cluster_arguments(replicas)},
            )
            await dlq.bind(DEAD_LETTER_EXCHANGE, routing_key=spec.name)
            await _declare_own_dlx(channel, spec, dlq)
            queue = await channel.declare_queue(
                spec.name, durable=True, arguments=spec.arguments(replicas)
            )
            for binding in spec.bindings:
                await queue.bind(binding.exchange, routing_key=binding.routing_key)


async def _declare_own_dlx(channel: AbstractChannel, spec: QueueSpec, dlq: Any) -> None:
    """The queue's own dead-letter exchange, bound to its dead-letter queue and nothing else."""
    own = await channel.declare_exchange(
        spec.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    await dlq.bind(own, routing_key=spec.name)
