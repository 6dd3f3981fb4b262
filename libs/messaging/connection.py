"""Broker connections: robust (reconnecting), optionally TLS, over one node or a cluster's nodes,
with errors that say what to do.

A URL may name several nodes of one cluster, comma-separated full URLs
(``amqp://u:p@host1:5672/vh,amqp://u:p@host2:5672/vh``). aio-pika's robust connection reconnects
to the one URL it was given; :class:`ClusterConnection` is the one small selection layer on top:
each connection attempt — the first, and every reconnection after a node was lost — goes to the
next node of the list, so a client whose node died moves to a live one and aio-pika restores its
channels, queues, consumers and exchanges there. What was in flight is not lost on the way: a
publish without a confirm stays in the outbox and is published again, an unacked delivery comes
back and the inbox absorbs it.
"""

from __future__ import annotations

import ssl
from typing import Any, ClassVar

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from libs.errors import ConfigurationError, InfrastructureUnavailable
from libs.observability.logging import get_logger
from libs.secrets import redact, url_list

__all__ = ["ClusterConnection", "connect", "nodes_of", "redact"]

log = get_logger(__name__)


def nodes_of(url: str) -> list[str]:
    """The node URLs a (possibly comma-separated) broker URL names."""
    nodes = [node for node in url_list(url) if node]
    for node in nodes:
        if not node.startswith(("amqp://", "amqps://")):
            raise ConfigurationError(
                f"broker URL {redact(node)!r}: each node is a whole amqp:// or amqps:// URL "
                "(several nodes: comma-separated URLs)"
            )
    if not nodes:
        raise ConfigurationError("the broker URL is empty")
    return nodes


class ClusterConnection(RobustConnection):
    """A robust connection that tries the nodes in turn: each connection attempt goes to the
    next node of ``NODES`` (a subclass per node list, made by :func:`connect`).

    The hook is the one place aio-pika starts every attempt: it clears ``transport`` first
    (``RobustConnection.__connect_transport``), after having cleared it once when the connection
    was made; the node is chosen there."""

    NODES: ClassVar[tuple[URL, ...]] = ()

    def __init__(self, url: URL, **kwargs: Any) -> None:
        self._cleared = 0
        super().__init__(url, **kwargs)

    @property
    def transport(self) -> Any:
        return self.__dict__.get("_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None and self.NODES:
            self._cleared += 1
            if self._cleared >= 2:  # the first time is __init__; then one per attempt
                self.url = self.NODES[(self._cleared - 2) % len(self.NODES)]
        self.__dict__["_transport"] = value

    @property
    def node(self) -> str:
        """host:port of the node this connection uses (or tries) now."""
        return f"{self.url.host}:{self.url.port}"

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if len(self.NODES) > 1:
            log.info("broker.node", node=self.node)


async def connect(
    url: str,
    *,
    name: str,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    reconnect_interval: float = 1.0,
) -> AbstractRobustConnection:
    """A robust connection: it reconnects (to the next node, given several) and restores
    channels, exchanges, queues, consumers. The first connection tries every node once."""
    nodes = nodes_of(url)
    options: dict[str, Any] = {
        "client_properties": {"connection_name": name},
        "timeout": timeout,
        "ssl_context": ssl_context,
        "reconnect_interval": reconnect_interval,
    }
    failure: Exception | None = None
    for start in range(len(nodes)):
        order = nodes[start:] + nodes[:start]
        cls = type("ClusterConnection", (ClusterConnection,), {"NODES": tuple(map(URL, order))})
        try:
            connection: AbstractRobustConnection = await aio_pika.connect_robust(
                order[0], connection_class=cls, **options
            )
            return connection
        except aio_pika.exceptions.ProbableAuthenticationError as exc:
            raise ConfigurationError(
                f"RabbitMQ at {redact(order[0])} refused the login ({type(exc).__name__}); check "
                "the user and its password (`orderflow setup` provisions the service users)"
            ) from None
        except (
            OSError,
            aio_pika.exceptions.AMQPConnectionError,
            TimeoutError,
            ssl.SSLError,
        ) as exc:
            failure = exc
    shown = ", ".join(redact(n) for n in nodes)
    raise InfrastructureUnavailable(
        f"cannot reach RabbitMQ at {shown} ({type(failure).__name__}); "
        "start it with `rabbitmq-server -detached` or set ORDERFLOW_AMQP_URL"
    ) from None
