"""The composition root of inventory_svc."""

from __future__ import annotations

from contracts import REGISTRY
from contracts.system import SYSTEM
from inventory_svc.handlers import HANDLERS, prepare
from libs.pg import Migration, load_migrations
from libs.service import ServiceDefinition

NAME = "inventory_svc"


def migrations() -> list[Migration]:
    return load_migrations("inventory_svc.adapters", "inventory")


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name=NAME, system=SYSTEM, registry=REGISTRY, handlers=HANDLERS, prepare=prepare
    )
