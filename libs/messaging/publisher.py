"""Publishing with publisher confirms, pipelined, persistent and mandatory.

``publish_many`` sends a whole batch before awaiting any confirm: the confirms of N messages cost
one round trip, not N. Each message gets an outcome: ``None`` when the broker confirmed it, else a
:class:`~libs.errors.PublishError` — ``PublishNacked``, ``PublishUnroutable`` (returned, since the
channel raises on returns) or ``ConfirmUnknown`` (no answer: publish again with the same id).
Nothing is reported as sent that the broker did not confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from pamqp import encode

from libs.errors import ConfirmUnknown, PublishError, PublishNacked, PublishUnroutable
from libs.messages.envelope import CONTENT_TYPE


def sendable_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Received headers in a form the AMQP encoder takes back: strings that were not UTF-8 arrive
    as ``bytes`` and go out as byte arrays; a value that still cannot be encoded is left out."""
    out: dict[str, Any] = {}
    for key, value in headers.items():
        value = _sendable(value)
        try:
            encode.field_table({key: value})
        except (TypeError, ValueError, OverflowError):
            continue
        out[key] = value
    return out


def _sendable(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: _sendable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sendable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """One message as it goes on the wire; body already encoded."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    type: str
    timestamp: datetime
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str = CONTENT_TYPE

    @classmethod
    def copy_of(
        cls,
        delivery: AbstractIncomingMessage,
        *,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any],
    ) -> Outgoing:
        """A received message sent on again unchanged but for where it goes and its headers
        (dead-lettering, replay): same body, id, type and properties. Header values a sender
        wrote that cannot be encoded again are left out (:func:`sendable_headers`)."""
        return cls(
            exchange=exchange,
            routing_key=routing_key,
            body=delivery.body,
            message_id=delivery.message_id or "",
            type=delivery.type or "",
            timestamp=delivery.timestamp or datetime.now(UTC),
            correlation_id=delivery.correlation_id,
            headers=sendable_headers(headers),
            content_type=delivery.content_type or "application/octet-stream",
        )


def _login_of(connection: AbstractRobustConnection) -> str | None:
    url = getattr(connection, "url", None)
    user = getattr(url, "user", None)
    return user if isinstance(user, str) and user else None


class Publisher:
    """Publishes on one confirm-mode channel of its own."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        confirm_timeout: float = 10.0,
        user_id: str | None = None,
    ) -> None:
        self._connection = connection
        self._confirm_timeout = confirm_timeout
        # user_id on every message, by default the login of the connection: the broker checks it
        # against the publisher's login, so consumers can trust it to name the sender.
        self._user_id = user_id if user_id is not None else _login_of(connection)
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    async def _ready_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            # A channel closed by the broker (e.g. 404 on a missing exchange) is replaced;
            # keeping the reference matters, a collected channel closes itself.
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._exchanges.clear()
        return self._channel

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            channel = await self._ready_channel()
            exchange = await channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    def _message(self, out: Outgoing) -> aio_pika.Message:
        return aio_pika.Message(
            out.body,
            headers=dict(out.headers),
            content_type=out.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=out.message_id,
            type=out.type,
            correlation_id=out.correlation_id,
            timestamp=out.timestamp,
            user_id=self._user_id,
        )

    async def _publish_one(self, out: Outgoing) -> PublishError | None:
        try:
            exchange = await self._exchange(out.exchange)
            await exchange.publish(
                self._message(out),
                routing_key=out.routing_key,
                mandatory=True,
                timeout=self._confirm_timeout,
            )
        except aio_pika.exceptions.PublishError as exc:
            return PublishUnroutable(f"returned by the broker: {_frame_text(exc)}")
        except aio_pika.exceptions.DeliveryError as exc:
            return PublishNacked(f"nacked by the broker: {_frame_text(exc)}")
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            self._exchanges.pop(out.exchange, None)
            return PublishUnroutable(f"exchange {out.exchange!r} does not exist: {exc}")
        except (
            TimeoutError,
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            RuntimeError,
        ) as exc:
            return ConfirmUnknown(f"no confirm: {type(exc).__name__}: {exc}")
        return None

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        """Publish all, pipelined; one outcome per message, in order."""
        if not messages:
            return []
        # Resolve exchanges first: concurrent first lookups could resume out of order and
        # reorder the batch (per-aggregate order relies on publish order).
        for name in dict.fromkeys(m.exchange for m in messages):
            with contextlib.suppress(Exception):
                await self._exchange(name)
        return list(await asyncio.gather(*(self._publish_one(m) for m in messages)))

    async def publish(self, message: Outgoing) -> None:
        """Publish one message and raise unless the broker confirmed it."""
        outcome = await self._publish_one(message)
        if outcome is not None:
            raise outcome

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None


def _frame_text(exc: Exception) -> str:
    frame = getattr(exc, "frame", None)
    reply = getattr(frame, "reply_text", None)
    return str(reply or exc)
