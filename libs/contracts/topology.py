"""Every exchange and queue of orderflow, declared by ``orderflow setup`` and at service start."""

from __future__ import annotations

from libs.messaging.topology import Binding, QueueSpec, Topology

EXCHANGES = (
    "order.commands",
    "payment.commands",
    "inventory.commands",
    "order.events",
    "payment.events",
    "inventory.events",
)

QUEUES = {
    "order_svc": QueueSpec("order_svc.commands", (Binding("order.commands", "#"),)),
    "payment_svc": QueueSpec("payment_svc.commands", (Binding("payment.commands", "#"),)),
    "inventory_svc": QueueSpec("inventory_svc.commands", (Binding("inventory.commands", "#"),)),
    "saga": QueueSpec(
        "saga.events",
        (
            Binding("order.events", "order.order_created.v1"),
            Binding("order.events", "order.order_confirmed.v1"),
            Binding("order.events", "order.order_rejected.v1"),
            Binding("payment.events", "#"),
            Binding("inventory.events", "#"),
        ),
    ),
}

TOPOLOGY = Topology(exchanges=EXCHANGES, queues=tuple(QUEUES.values()))
