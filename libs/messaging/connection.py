"""Broker connections: robust (reconnecting), optionally TLS, with errors that say what to do."""

from __future__ import annotations

import ssl

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from libs.errors import ConfigurationError, InfrastructureUnavailable
from libs.secrets import redact

__all__ = ["connect", "redact"]


async def connect(
    url: str, *, name: str, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
) -> AbstractRobustConnection:
    """A robust connection: it reconnects and restores channels, exchanges, queues, consumers."""
    try:
        return await aio_pika.connect_robust(
            url,
            client_properties={"connection_name": name},
            timeout=timeout,
            ssl_context=ssl_context,
        )
    except aio_pika.exceptions.ProbableAuthenticationError as exc:
        raise ConfigurationError(
            f"RabbitMQ at {redact(url)} refused the login ({type(exc).__name__}); check the user "
            "and its password (`orderflow setup` provisions the service users)"
        ) from None
    except (OSError, aio_pika.exceptions.AMQPConnectionError, TimeoutError, ssl.SSLError) as exc:
        raise InfrastructureUnavailable(
            f"cannot reach RabbitMQ at {redact(url)} ({type(exc).__name__}); "
            "start it with `rabbitmq-server -detached` or set ORDERFLOW_AMQP_URL"
        ) from None
