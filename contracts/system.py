"""orderflow, described once (see :mod:`libs.system`): the one entry a new service adds."""

from __future__ import annotations

from libs.messaging.topology import Binding, QueueSpec
from libs.system import ServiceSpec, SystemSpec

SYSTEM = SystemSpec(
    name="orderflow",
    exchanges=(
        "order.commands",
        "payment.commands",
        "inventory.commands",
        "order.events",
        "payment.events",
        "inventory.events",
    ),
    # the public front door: any AMQP client may place an order
    public_types=frozenset({"order.place_order.v1"}),
    services=(
        ServiceSpec(
            "order_svc",
            QueueSpec("order_svc.commands", (Binding("order.commands", "#"),)),
            publishes=("order.events",),
            tables=("order_lines", "orders", "catalog"),
            color="36",
        ),
        ServiceSpec(
            "payment_svc",
            QueueSpec("payment_svc.commands", (Binding("payment.commands", "#"),)),
            publishes=("payment.events",),
            tables=("ledger", "payments", "customers"),
            color="32",
        ),
        ServiceSpec(
            "inventory_svc",
            QueueSpec("inventory_svc.commands", (Binding("inventory.commands", "#"),)),
            publishes=("inventory.events",),
            tables=("reservation_lines", "reservations", "stock"),
            color="33",
        ),
        ServiceSpec(
            "saga",
            QueueSpec(
                "saga.events",
                (
                    Binding("order.events", "order.order_created.v1"),
                    Binding("order.events", "order.order_confirmed.v1"),
                    Binding("order.events", "order.order_rejected.v1"),
                    Binding("payment.events", "#"),
                    Binding("inventory.events", "#"),
                ),
            ),
            publishes=("order.commands", "payment.commands", "inventory.commands"),
            tables=("saga_log", "saga_instance"),
            color="35",
        ),
    ),
)
