"""Placing orders and following them, over the wire contract only (what any AMQP client does).

The client publishes ``order.place_order.v1`` to ``order.commands`` with confirms, and follows
orders on ``order.events`` through an exclusive queue of its own. A line's price is optional: the
catalog's price is charged, and a price given that is not the catalog's has the order refused
(``OrderRejected`` with the reason). Every order placed this way ends CONFIRMED or REJECTED. Each placed order starts a trace
(the CLI's PRODUCER span) that every service continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import ChannelNotFoundEntity
from opentelemetry.trace import SpanKind

from contracts import REGISTRY
from contracts.order import OrderConfirmed, OrderCreated, OrderRejected, PlaceOrder
from contracts.types import QuotedLine
from libs.messages import codec
from libs.messaging.connection import connect
from libs.messaging.publisher import Outgoing, Publisher
from libs.observability.messaging import send_attributes, set_message_id
from libs.observability.tracing import current_trace_headers, tracer

_tracer = tracer("orderflow.cli")
SOURCE = "/orderflow/cli"


@dataclass
class Outcome:
    order_id: str
    status: str  # PENDING | CONFIRMED | REJECTED
    reason: str | None = None
    total: Decimal | None = None
    placed_at: float = 0.0
    ended_at: float | None = None
    trace_id: str | None = None

    @property
    def latency_ms(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.placed_at) * 1000


class OrderClient:
    def __init__(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        self._publisher = Publisher(connection)
        self.outcomes: dict[str, Outcome] = {}
        self._changed = asyncio.Event()
        self._channel: Any = None

    @classmethod
    async def open(cls, amqp_url: str) -> OrderClient:
        client = cls(await connect(amqp_url, name="orderflow-cli"))
        await client._follow()
        return client

    async def unserved(self) -> list[str]:
        """The service queues an order goes through that no process consumes (asked of the
        broker: consumers of each queue), or that do not exist."""
        from orderflow.system import SYSTEM

        idle = []
        for queue in SYSTEM.queues.values():
            channel = await self._connection.channel()
            try:
                declared = await channel.declare_queue(queue.name, passive=True)
                consumers = declared.declaration_result.consumer_count
            except ChannelNotFoundEntity:  # no such queue: nothing consumes it either
                consumers = 0
            finally:
                if not channel.is_closed:
                    await channel.close()
            if not consumers:
                idle.append(queue.name)
        return idle

    async def _follow(self) -> None:
        self._channel = await self._connection.channel()
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for spec in (OrderCreated, OrderConfirmed, OrderRejected):
            await queue.bind("order.events", routing_key=spec.TYPE)
        await queue.consume(self._on_event, no_ack=True)

    async def _on_event(self, delivery: AbstractIncomingMessage) -> None:
        envelope = codec.decode(
            delivery.body, content_type=delivery.content_type, max_bytes=1 << 20
        )
        message = REGISTRY.parse(envelope)
        outcome = self.outcomes.get(getattr(message, "order_id", ""))
        if outcome is None:
            return
        if isinstance(message, OrderConfirmed):
            outcome.status, outcome.total = "CONFIRMED", message.total
        elif isinstance(message, OrderRejected):
            outcome.status, outcome.reason = "REJECTED", message.reason
        elif isinstance(message, OrderCreated):
            outcome.total = message.total
            return
        outcome.ended_at = time.monotonic()
        self._changed.set()

    async def place(
        self,
        *,
        customer_id: str,
        items: Sequence[tuple[str, int, Decimal | None]],
        order_id: str | None = None,
    ) -> Outcome:
        """Publish one order; ``items`` are (SKU, quantity, price seen or None for the
        catalog's)."""
        order_id = order_id or str(uuid.uuid4())
        command = PlaceOrder(
            order_id=order_id,
            customer_id=customer_id,
            items=tuple(QuotedLine(sku=s, quantity=q, unit_price=p) for s, q, p in items),
        )
        with _tracer.start_as_current_span(
            "publish order.commands",
            kind=SpanKind.PRODUCER,
            attributes={
                **send_attributes(exchange="order.commands", routing_key=PlaceOrder.TYPE),
                "orderflow.order_id": order_id,
            },
        ) as span:
            trace = current_trace_headers()
            envelope = REGISTRY.envelope(
                command, source=SOURCE, subject=order_id, correlation_id=order_id
            )
            envelope = envelope.with_trace(trace.get("traceparent"), trace.get("tracestate"))
            set_message_id(span, envelope.id)
            outcome = Outcome(
                order_id,
                "PENDING",
                placed_at=time.monotonic(),
                trace_id=format(span.get_span_context().trace_id, "032x")
                if span.get_span_context().is_valid
                else None,
            )
            self.outcomes[order_id] = outcome
            await self._publisher.publish(
                Outgoing(
                    exchange="order.commands",
                    routing_key=PlaceOrder.TYPE,
                    body=codec.encode(envelope),
                    message_id=envelope.id,
                    type=envelope.type,
                    timestamp=envelope.time,
                    correlation_id=order_id,
                    headers=trace,
                )
            )
        return outcome

    async def wait(self, order_ids: list[str], *, timeout: float) -> bool:
        """True when every order reached a terminal state within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while any(self.outcomes[o].status == "PENDING" for o in order_ids):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def close(self) -> None:
        await self._publisher.close()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        await self._connection.close()
