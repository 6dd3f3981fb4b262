"""The composition root of order_svc."""

from __future__ import annotations

from contracts import REGISTRY
from contracts.system import SYSTEM
from libs.pg import Migration, load_migrations
from libs.service import ServiceDefinition
from order_svc import handlers
from order_svc.settings import OrderSettings

NAME = "order_svc"


def migrations() -> list[Migration]:
    return load_migrations("order_svc.adapters", "order")


def definition(settings: OrderSettings | None = None) -> ServiceDefinition:
    handlers.configure(settings or OrderSettings())
    return ServiceDefinition(
        name=NAME,
        system=SYSTEM,
        registry=REGISTRY,
        handlers=handlers.HANDLERS,
        refusals=handlers.REFUSALS,
    )
