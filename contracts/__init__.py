"""orderflow's wire contract: message types, their registry and the broker topology.

Services depend on this package and on nothing of each other's. ``docs/asyncapi.yaml`` is
generated from :data:`REGISTRY` and :data:`TOPOLOGY` (``orderflow asyncapi``).
"""

from contracts import inventory, order, payment
from contracts.topology import TOPOLOGY
from libs.messages.registry import MessageRegistry

REGISTRY = MessageRegistry(*order.MESSAGES, *payment.MESSAGES, *inventory.MESSAGES)

__all__ = ["REGISTRY", "TOPOLOGY", "inventory", "order", "payment"]
