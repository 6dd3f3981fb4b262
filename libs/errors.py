"""The exception hierarchy of orderflow's toolkit.

Every error the toolkit raises derives from :class:`OrderflowError`. Driver errors (asyncpg,
aio-pika) are translated into these at the edge (``libs.pg.errors``, ``libs.messaging``), so the
consumer runner decides what to do from the class alone::

    OrderflowError
     ├── PoisonMessage            never retried: dead-lettered at once, with the reason
     │    ├── MalformedMessage        not JSON, not a CloudEvent, missing/invalid id
     │    ├── UnsupportedContentType  content type other than CloudEvents/JSON
     │    ├── MessageTooLarge         body over the configured limit
     │    ├── UnknownMessageType      no such type in the registry
     │    │    └── UnknownMessageVersion   the type exists, not in this version
     │    ├── InvalidMessageData      data fails the type's schema or limits
     │    └── ImpostorMessage         a type sent by a broker user that does not own it
     ├── TransientError           retried with backoff, bounded, then dead-lettered
     │    ├── InfrastructureUnavailable   connection lost, server restarting
     │    └── ConcurrencyConflict          serialization failure (40001), deadlock (40P01)
     ├── StateOverwriteRefused    a write an aggregate's rules forbid (a bug): never retried as
     │                            a conflict; dead-lettered after the bounded retries of any bug
     ├── PublishError             a publish that is not known to be on the broker
     │    ├── PublishNacked           the broker answered basic.nack
     │    ├── PublishUnroutable       mandatory publish returned (no queue bound)
     │    └── ConfirmUnknown          channel/connection lost or timed out before the confirm
     └── ConfigurationError       settings or topology that cannot work
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyConflict",
    "ConfigurationError",
    "ConfirmUnknown",
    "ImpostorMessage",
    "InfrastructureUnavailable",
    "InvalidMessageData",
    "MalformedMessage",
    "MessageTooLarge",
    "OrderflowError",
    "PoisonMessage",
    "PublishError",
    "PublishNacked",
    "PublishUnroutable",
    "StateOverwriteRefused",
    "TransientError",
    "UnknownMessageType",
    "UnknownMessageVersion",
    "UnsupportedContentType",
]


class OrderflowError(Exception):
    """Base of every error raised by the orderflow toolkit."""


class PoisonMessage(OrderflowError):
    """A message that can never be processed, however often it is retried."""


class MalformedMessage(PoisonMessage):
    """The body is not a well-formed CloudEvents 1.0 JSON document."""


class UnsupportedContentType(PoisonMessage):
    """The message declares a content type the codec does not read."""


class MessageTooLarge(PoisonMessage):
    """The body exceeds the configured maximum size."""


class UnknownMessageType(PoisonMessage):
    """The message type is not in the registry."""


class UnknownMessageVersion(UnknownMessageType):
    """The message type is known, but not in the version the message carries."""


class InvalidMessageData(PoisonMessage):
    """The message's data does not satisfy its type's schema or limits."""


class ImpostorMessage(PoisonMessage):
    """A message type arrived from a broker user other than the one that owns it.

    The broker verifies ``user_id`` against the publisher's login, so the property names who
    really sent the message; a type owned by one service is accepted only from that service.
    """


class TransientError(OrderflowError):
    """An error that may go away when the same message is processed again."""


class InfrastructureUnavailable(TransientError):
    """The database or the broker could not be reached or went away mid-operation."""


class ConcurrencyConflict(TransientError):
    """The database aborted the transaction to keep it serializable (40001, 40P01)."""


class StateOverwriteRefused(OrderflowError):
    """A conditional write found a state its rules do not allow it to replace.

    Under the per-order lock this is deterministic (a bug, not a race), so it is not a
    :class:`TransientError`: the runner treats it like any other failure of a handler.
    """


class PublishError(OrderflowError):
    """A publish whose arrival on the broker is not confirmed."""


class PublishNacked(PublishError):
    """The broker refused the message (basic.nack)."""


class PublishUnroutable(PublishError):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class ConfirmUnknown(PublishError):
    """The confirm never arrived: the message may or may not be on the broker.

    The only safe reaction is to publish it again with the same message id and let the
    consumer's inbox absorb the duplicate.
    """


class ConfigurationError(OrderflowError):
    """Settings or topology that cannot work."""
