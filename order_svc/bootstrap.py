"""The composition root of order_svc."""

from __future__ import annotations

from contracts import REGISTRY
from contracts.system import SYSTEM
from libs.pg.migrations import Migration, load
from libs.service.app import ServiceDefinition
from libs.settings import Settings
from order_svc import handlers

NAME = "order_svc"


def migrations() -> list[Migration]:
    return load("order_svc.adapters", "order")


def definition(settings: Settings | None = None) -> ServiceDefinition:
    handlers.configure((settings or Settings()).order)
    return ServiceDefinition(
        name=NAME,
        system=SYSTEM,
        registry=REGISTRY,
        handlers=handlers.HANDLERS,
        refusals=handlers.REFUSALS,
    )
