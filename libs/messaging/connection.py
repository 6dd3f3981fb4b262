"""Broker connections: robust (reconnecting) and with errors that say what to do."""

from __future__ import annotations

from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from libs.errors import InfrastructureUnavailable


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


async def connect(url: str, *, name: str, timeout: float = 10.0) -> AbstractRobustConnection:
    """A robust connection: it reconnects and restores channels, exchanges, queues, consumers."""
    try:
        return await aio_pika.connect_robust(
            url, client_properties={"connection_name": name}, timeout=timeout
        )
    except (OSError, aio_pika.exceptions.AMQPConnectionError, TimeoutError) as exc:
        raise InfrastructureUnavailable(
            f"cannot reach RabbitMQ at {redact(url)} ({type(exc).__name__}: {exc}); "
            "start it with `rabbitmq-server -detached` or set ORDERFLOW_AMQP_URL"
        ) from None
