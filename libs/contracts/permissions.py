"""Least privilege on the broker: what each service's user may configure, write and read.

Derived from the topology: a service configures its own queues and the exchanges it publishes
to; writes to those exchanges, to the dead-letter exchange and to its queues (``queue.bind``
needs write on the queue); reads its queues and the exchanges its queue binds from. Nothing
else — in particular not another service's queue or another context's command exchange.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from libs.contracts.topology import QUEUES
from libs.messaging.topology import DEAD_LETTER_EXCHANGE

PUBLISHES = {
    "order_svc": ("order.events",),
    "payment_svc": ("payment.events",),
    "inventory_svc": ("inventory.events",),
    "saga": ("order.commands", "payment.commands", "inventory.commands"),
}


@dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str


def _any_of(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in sorted(set(names))) + ")$"


def broker_permissions(service: str) -> Permissions:
    queue = QUEUES[service]
    own = [queue.name, queue.dead_letter_queue]
    sources = [b.exchange for b in queue.bindings]
    return Permissions(
        configure=_any_of(own + list(PUBLISHES[service])),
        write=_any_of(own + list(PUBLISHES[service]) + [DEAD_LETTER_EXCHANGE]),
        read=_any_of(own + sources + [DEAD_LETTER_EXCHANGE]),
    )
