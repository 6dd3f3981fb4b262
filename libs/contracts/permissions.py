"""Least privilege on the broker: what each service's user may configure, write and read.

Derived from the topology: a service configures its own queues, its own dead-letter exchange
and the exchanges it publishes to; writes to those exchanges, to its own dead-letter exchange and
to its queues (``queue.bind`` needs write on the queue); reads its queues, the exchanges its
queue binds from and the dead-letter exchanges bound to its dead-letter queue. Nothing else — in
particular not the shared dead-letter exchange (the broker dead-letters there itself), another
service's queue, dead-letter exchange or another context's command exchange.

:data:`OWNERS` says which service sends each exchange's messages, so a consumer accepts a type
only from that service's broker user; :data:`PUBLIC_TYPES` are the types anyone may send.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from libs.contracts.system import SYSTEM
from libs.contracts.topology import QUEUES
from libs.messaging.topology import DEAD_LETTER_EXCHANGE

PUBLISHES = SYSTEM.publishes
PUBLIC_TYPES = SYSTEM.public_types  # the public front door: any AMQP client may place an order


def owners(exchange: str) -> tuple[str, ...]:
    """The services that publish to an exchange."""
    return tuple(s for s, exchanges in PUBLISHES.items() if exchange in exchanges)


def allowed_senders(
    type_name: str, exchange: str, *, user_of: Callable[[str], str], operator: str | None
) -> frozenset[str] | None:
    """The broker users a message type is accepted from; None when anyone may send it.

    The users of the services that publish to its exchange, and the operator (whose account
    administers the broker anyway, and replays dead letters).
    """
    if type_name in PUBLIC_TYPES:
        return None
    users = {user_of(service) for service in owners(exchange)}
    if operator:
        users.add(operator)
    return frozenset(users)


@dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str


def _any_of(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in sorted(set(names))) + ")$"


def broker_permissions(service: str) -> Permissions:
    queue = QUEUES[service]
    own = [queue.name, queue.dead_letter_queue, queue.dead_letter_exchange]
    sources = [b.exchange for b in queue.bindings]
    return Permissions(
        configure=_any_of(own + list(PUBLISHES[service])),
        write=_any_of(own + list(PUBLISHES[service])),
        read=_any_of(own + sources + [DEAD_LETTER_EXCHANGE]),
    )
