"""Least privilege on the broker and trusted senders, for orderflow: the rules of
:class:`libs.system.SystemSpec` applied to orderflow's description.

A service configures its own queues, its own dead-letter exchange and the exchanges it publishes
to; writes to those, reads its queues and the exchanges its queue binds from — in particular not
the shared dead-letter exchange (the broker dead-letters there itself), another service's queue,
dead-letter exchange or another context's command exchange. A consumer accepts a type only from
the broker user of the service that owns its exchange (or the operator); :data:`PUBLIC_TYPES`
are the types anyone may send.
"""

from __future__ import annotations

from contracts.system import SYSTEM
from libs.system import Permissions

PUBLISHES = SYSTEM.publishes
PUBLIC_TYPES = SYSTEM.public_types  # the public front door: any AMQP client may place an order
owners = SYSTEM.owners
allowed_senders = SYSTEM.allowed_senders
broker_permissions = SYSTEM.broker_permissions

__all__ = [
    "PUBLIC_TYPES",
    "PUBLISHES",
    "Permissions",
    "allowed_senders",
    "broker_permissions",
    "owners",
]
