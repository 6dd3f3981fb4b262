"""Re-deliver a share of all messages with the same id, as a flaky network or broker would.

A tap queue bound to every orderflow exchange sees each message once; with probability ``share``
it publishes an exact copy (same body, same message id, same headers, plus
``x-chaos-duplicate``) to the same exchange and routing key. Copies are never copied again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts import TOPOLOGY
from libs.errors import ConfirmUnknown
from libs.messaging.publisher import Outgoing, Publisher

MARK = "x-chaos-duplicate"


class Duplicator:
    def __init__(self, connection: AbstractRobustConnection, *, share: float, seed: int) -> None:
        self._connection = connection
        self._publisher = Publisher(connection)
        self._share = share
        self._rng = random.Random(seed)
        self._channel: Any = None
        self.copied: list[str] = []  # message ids of the copies the broker confirmed
        # copies sent whose confirm never came (unanswered or cut off): they may have arrived,
        # so an inbox absorbing one is no surprise; a nacked or returned copy did not arrive
        self.uncertain: list[str] = []
        self.active = True
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        queue = await self._channel.declare_queue("chaos.tap", exclusive=True, auto_delete=True)
        for exchange in TOPOLOGY.exchanges:
            await queue.bind(exchange, routing_key="#")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        if not self.active or MARK in headers or self._rng.random() >= self._share:
            return
        headers[MARK] = 1
        message_id = message.message_id or ""
        self.uncertain.append(message_id)  # until its answer: a cancelled publish may arrive
        self._in_flight += 1
        self._idle.clear()
        try:
            outcome = await self._publisher.publish_many(
                [
                    Outgoing.copy_of(
                        message,
                        exchange=message.exchange or "",
                        routing_key=message.routing_key or "",
                        headers=headers,
                    )
                ]
            )
            if not isinstance(outcome[0], ConfirmUnknown):  # answered: arrived or not
                self.uncertain.remove(message_id)
            if outcome[0] is None:
                self.copied.append(message_id)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def close(self) -> None:
        """Copy nothing more, and wait (up to 15 s) for the copies sent to be answered, so that
        ``copied`` is final when this returns."""
        self.active = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=15)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        await self._publisher.close()
