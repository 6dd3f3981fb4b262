"""Reading a delivery: everything checked before a handler sees it.

Size, content encoding and type, bounded JSON, the CloudEvent, a known type and version, a
handler for it, the sender's broker-verified ``user_id`` against the type's owners, and the
schema. Anything wrong — including exceptions nobody predicted, such as a ``RecursionError`` or
header bytes that are not text — is a :class:`~libs.errors.PoisonMessage` saying why. A type may
have a *refuser*: data that fails its schema is then answered by it instead (see
:class:`Refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.errors import (
    ImpostorMessage,
    InvalidMessageData,
    MalformedMessage,
    PoisonMessage,
    UnknownMessageType,
    UnsupportedContentType,
)
from libs.messages import codec
from libs.messages.envelope import Envelope
from libs.messages.registry import Message, MessageRegistry
from libs.messaging.consumer import Delivery
from libs.service.context import Handler, HandlerContext, Refuser

__all__ = ["DeliveryReader", "Refusal"]

_PLAIN_ENCODINGS = frozenset({"identity", "utf-8", "utf8"})


class Refusal:
    """A refusal runs like a handler (same transaction, inbox row, outbox, ack); when the refuser
    cannot answer, the original error dead-letters the message as if there were no refuser.
    Refusals answer strangers' data, so each runs in a savepoint of its own: one that a stranger
    makes fail (garbage naming a live order) costs that message, not the others of its batch."""

    def __init__(self, refuse: Refuser, error: PoisonMessage) -> None:
        self._refuse, self._error = refuse, error
        self.__qualname__ = f"refusal:{getattr(refuse, '__qualname__', 'refuse')}"

    async def __call__(self, _: Any, ctx: HandlerContext) -> None:
        if not await self._refuse(ctx.envelope, self._error, ctx):
            raise self._error


@dataclass(frozen=True)
class DeliveryReader:
    """Turns a delivery into (envelope, message, handler) for one consumer."""

    consumer: str
    registry: MessageRegistry
    handlers: Mapping[str, Handler]
    max_body_bytes: int
    senders: Mapping[str, frozenset[str]]
    refusals: Mapping[str, Refuser]

    def known_type(self, envelope: Envelope | None) -> str:
        """The envelope's type when this consumer handles it, else ``other``: a metric's
        attribute must not take a stranger's made-up type names."""
        if envelope is not None and envelope.type in self.handlers:
            return envelope.type
        return "other"

    def read(self, delivery: Delivery) -> tuple[Envelope, Message | None, Handler]:
        """The delivery as (event, message, handler), or the PoisonMessage that says why not.

        Whatever goes wrong while reading is poison, predicted or not: a reader that lets any
        exception out would leave the delivery unsettled, holding a prefetch slot forever.
        """
        try:
            return self._read(delivery)
        except PoisonMessage:
            raise
        except Exception as exc:
            raise MalformedMessage(
                f"the delivery could not be read: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None

    def _read(self, delivery: Delivery) -> tuple[Envelope, Message | None, Handler]:
        if (delivery.content_encoding or "identity").lower() not in _PLAIN_ENCODINGS:
            raise UnsupportedContentType(
                f"content encoding {str(delivery.content_encoding)[:40]!r}: the body must be "
                "plain UTF-8 JSON"
            )
        envelope = codec.decode(
            delivery.body, content_type=delivery.content_type, max_bytes=self.max_body_bytes
        )
        # The event's own id is the idempotency key. The AMQP message_id should mirror it, but
        # clients (aio-pika among them) fill it with a random id when the caller sets none.
        self.registry.spec(envelope.type)  # unknown type or version: say which
        handler = self.handlers.get(envelope.type)
        if handler is None:
            raise UnknownMessageType(f"{self.consumer} has no handler for {envelope.type}")
        self._check_sender(envelope.type, delivery.user_id)
        try:
            return envelope, self.registry.parse(envelope), handler
        except InvalidMessageData as exc:
            refuse = self.refusals.get(envelope.type)
            if refuse is None:
                raise
            return envelope, None, Refusal(refuse, exc)

    def _check_sender(self, type_name: str, user_id: object) -> None:
        """A type owned by a service is accepted only from that service's broker user.

        The broker refuses a publish whose ``user_id`` is not the publisher's login, so the
        property names who really sent the message (absent: the sender did not say).
        """
        allowed = self.senders.get(type_name)
        if allowed is None or user_id in allowed:
            return
        sender = f"user {str(user_id)[:64]!r}" if user_id else "a publisher that set no user_id"
        raise ImpostorMessage(
            f"{type_name} is accepted only from {', '.join(sorted(allowed))}; "
            f"this one came from {sender}"
        )
