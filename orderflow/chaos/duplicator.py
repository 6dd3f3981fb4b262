"""Re-deliver a share of all messages with the same id, as a flaky network or broker would.

A tap queue bound to every orderflow exchange sees each message once; with probability ``share``
it publishes an exact copy (same body, same message id, same headers, plus
``x-chaos-duplicate``) to the same exchange and routing key. Copies are never copied again.
"""

from __future__ import annotations

import random
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts import TOPOLOGY
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
        # copies sent whose confirm never came (nacked, unanswered, cut by close, or still
        # awaited): they may have arrived, so an inbox absorbing one is no surprise
        self.uncertain: list[str] = []
        self.active = True

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
        self.uncertain.append(message_id)  # until its confirm: a cancelled publish may arrive
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
        if outcome[0] is None:
            self.uncertain.remove(message_id)
            self.copied.append(message_id)

    async def close(self) -> None:
        self.active = False
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        await self._publisher.close()
