"""Taking deliveries from a queue, with acknowledgement after the work is done.

:class:`QueueConsumer` hands each delivery to a ``process`` coroutine (aio-pika runs each
delivery's callback as its own task; ``prefetch`` bounds how many are in flight), or, in batch
mode, hands whatever has arrived to ``process_batch`` from a single worker per channel, which is
what makes one ``multiple=True`` ack safe: no other worker's deliveries share the channel.

A delivery is never left unsettled: an unsettled delivery holds a prefetch slot until the process
dies, and enough of them stop the queue. ``process`` and ``process_batch`` settle what they are
given; if either raises anyway (a bug), the consumer returns every delivery it still holds to
the queue (``nack`` with requeue; quorum queues count the return, and ``x-delivery-limit`` ends a
loop in the dead-letter queue). An ack or nack that fails because the channel was lost is only
logged: the broker redelivers and the inbox absorbs the duplicate. ``stop`` cancels the
subscription, lets in-flight deliveries finish, then closes the channel.

:class:`DeadLetterPublisher` moves a delivery to its queue's dead-letter queue with headers
saying why, through the queue's own dead-letter exchange, confirmed by the broker before the
original is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from libs.messages.envelope import utcnow
from libs.messaging.publisher import Outgoing, Publisher
from libs.messaging.topology import dead_letter_exchange_of
from libs.observability.logging import get_logger

log = get_logger(__name__)

Delivery = AbstractIncomingMessage
ProcessFn = Callable[[AbstractIncomingMessage], Awaitable[None]]
BatchFn = Callable[[list[AbstractIncomingMessage]], Awaitable[None]]

ERROR_CLASS = "x-orderflow-error-class"
ERROR_MESSAGE = "x-orderflow-error"
ERROR_SERVICE = "x-orderflow-service"
ERROR_ATTEMPTS = "x-orderflow-attempts"
ORIGINAL_QUEUE = "x-orderflow-queue"
ORIGINAL_EXCHANGE = "x-orderflow-exchange"
ORIGINAL_ROUTING_KEY = "x-orderflow-routing-key"
ORIGINAL_SENDER = "x-orderflow-sender"  # the broker-verified user_id of the original
DEAD_AT = "x-orderflow-dead-at"


class QueueConsumer:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        queue: str,
        prefetch: int,
        process: ProcessFn,
        process_batch: BatchFn | None = None,
        max_batch: int = 128,
    ) -> None:
        self._connection = connection
        self._queue_name = queue
        self._prefetch = prefetch
        self._process = process
        # Batch mode: one worker takes whatever has arrived (up to max_batch) at a time. One
        # worker per channel is what makes an ack with multiple=True safe.
        self._process_batch = process_batch
        self._max_batch = max_batch
        self._buffer: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._worker_busy = False
        self._channel: AbstractChannel | None = None
        self._tag: str | None = None
        self._queue: Any = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._channel.get_queue(self._queue_name, ensure=True)
        if self._process_batch is not None:
            self._worker = asyncio.create_task(
                self._batch_worker(), name=f"batch:{self._queue_name}"
            )
        self._tag = await self._queue.consume(self._on_message)

    async def _batch_worker(self) -> None:
        assert self._process_batch is not None
        while True:
            await self._arrived.wait()
            batch = self._buffer[: self._max_batch]
            del self._buffer[: self._max_batch]
            if not self._buffer:
                self._arrived.clear()
            self._worker_busy = True
            try:
                await self._process_batch(batch)
            except Exception:  # the runner settles everything itself; this is a bug
                log.exception("consumer.batch_crashed", queue=self._queue_name, size=len(batch))
                await return_unsettled(batch)
            finally:
                self._worker_busy = False
                if not self._buffer:
                    self._idle.set()

    async def _on_message(self, delivery: AbstractIncomingMessage) -> None:
        if self._process_batch is not None:
            self._buffer.append(delivery)
            self._idle.clear()
            self._arrived.set()
            return
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        self._idle.clear()
        try:
            await self._process(delivery)
        except Exception:  # the runner settles everything itself; this is a bug
            log.exception("consumer.process_crashed", queue=self._queue_name)
            await return_unsettled([delivery])
        finally:
            self._in_flight.discard(task)
            if not self._in_flight:
                self._idle.set()

    @property
    def worker(self) -> asyncio.Task[None] | None:
        """The batch worker task (batch mode), for liveness checks."""
        return self._worker

    @property
    def running(self) -> bool:
        """Subscribed on an open channel, and (batch mode) its worker alive."""
        channel = self._channel
        worker_alive = self._worker is None or not self._worker.done()
        return channel is not None and not channel.is_closed and worker_alive

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) + len(self._buffer) + int(self._worker_busy)

    async def _drained(self) -> None:
        while self.in_flight:
            self._idle.clear()
            if not self.in_flight:
                return
            await self._idle.wait()

    async def stop(self, *, grace: float = 30.0) -> None:
        """Stop taking deliveries, finish those in flight, close the channel."""
        if self._queue is not None and self._tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._tag), 5)
            except Exception as exc:  # the channel may already be gone
                log.warning("consumer.cancel_failed", queue=self._queue_name, error=str(exc))
        try:
            await asyncio.wait_for(self._drained(), timeout=grace)
        except TimeoutError:
            log.warning("consumer.stop_timeout", queue=self._queue_name, in_flight=self.in_flight)
        if self._worker is not None:
            self._worker.cancel()
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), 5)


async def settle(delivery: AbstractIncomingMessage, *, ack: bool, multiple: bool = False) -> None:
    """Ack (or requeue) and only log a failure: redelivery is safe, the inbox absorbs it."""
    try:
        if ack:
            await delivery.ack(multiple=multiple)
        else:
            await delivery.nack(requeue=True)
    except Exception as exc:
        log.warning("consumer.settle_failed", ack=ack, error=f"{type(exc).__name__}: {exc}")


async def return_unsettled(deliveries: list[AbstractIncomingMessage]) -> None:
    """Requeue every delivery not yet acked, nacked or rejected, so no prefetch slot leaks.

    aio-pika marks only the delivery an ack names as processed: when the last one alone is, it
    was the ``multiple=True`` ack that covers the whole batch, and nothing is left to return.
    """
    covered_by_last = len(deliveries) > 1 and deliveries[-1].processed
    if covered_by_last and not any(d.processed for d in deliveries[:-1]):
        return
    for delivery in deliveries:
        if not delivery.processed:
            await settle(delivery, ack=False)


def delivery_count(delivery: AbstractIncomingMessage) -> int:
    """How many times the broker delivered this message before (quorum queues count)."""
    value = (delivery.headers or {}).get("x-delivery-count", 0)
    # the broker sets an integer; anything else was written by the sender
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class DeadLetterPublisher:
    """Sends deliveries to ``<queue>.dlq`` with the reason, confirmed."""

    def __init__(self, publisher: Publisher, *, service: str) -> None:
        self._publisher = publisher
        self._service = service

    async def dead_letter(
        self,
        delivery: AbstractIncomingMessage,
        *,
        queue: str,
        error: BaseException,
        attempts: int,
    ) -> None:
        """Publish the delivery to its dead-letter queue; raises if not confirmed."""
        headers: dict[str, Any] = {
            k: v for k, v in (delivery.headers or {}).items() if not k.startswith("x-orderflow-")
        }
        headers.update(
            {
                ERROR_CLASS: type(error).__name__,
                ERROR_MESSAGE: str(error)[:1000],
                ERROR_SERVICE: self._service,
                ERROR_ATTEMPTS: attempts,
                ORIGINAL_QUEUE: queue,
                ORIGINAL_EXCHANGE: delivery.exchange or "",
                ORIGINAL_ROUTING_KEY: delivery.routing_key or "",
                ORIGINAL_SENDER: delivery.user_id or "",
                DEAD_AT: utcnow().isoformat(),
            }
        )
        await self._publisher.publish(
            Outgoing.copy_of(
                delivery,
                exchange=dead_letter_exchange_of(queue),
                routing_key=queue,
                headers=headers,
            )
        )
