"""Every exchange and queue of orderflow, declared by ``orderflow setup`` and at service start:
derived from the system's description (:mod:`contracts.system`)."""

from __future__ import annotations

from contracts.system import SYSTEM

EXCHANGES = SYSTEM.exchanges
QUEUES = SYSTEM.queues
TOPOLOGY = SYSTEM.topology
