"""The whole system as the operator tools see it: services, their databases and migrations."""

from __future__ import annotations

from collections.abc import Callable

import inventory_svc.bootstrap
import order_svc.bootstrap
import payment_svc.bootstrap
import saga.bootstrap
from libs.inbox import store as inbox_store
from libs.outbox import store as outbox_store
from libs.pg.migrations import Migration

SERVICES = ("order_svc", "payment_svc", "inventory_svc", "saga")

_OWN: dict[str, Callable[[], list[Migration]]] = {
    "order_svc": order_svc.bootstrap.migrations,
    "payment_svc": payment_svc.bootstrap.migrations,
    "inventory_svc": inventory_svc.bootstrap.migrations,
    "saga": saga.bootstrap.migrations,
}


def migrations(service: str) -> list[Migration]:
    """Everything one service's database needs: outbox, inbox, then its own tables."""
    return [*outbox_store.migrations(), *inbox_store.migrations(), *_OWN[service]()]
