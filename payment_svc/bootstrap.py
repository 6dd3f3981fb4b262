"""The composition root of payment_svc."""

from __future__ import annotations

from contracts import REGISTRY
from contracts.system import SYSTEM
from libs.pg import Migration, load_migrations
from libs.service import ServiceDefinition
from payment_svc.handlers import HANDLERS, prepare

NAME = "payment_svc"


def migrations() -> list[Migration]:
    return load_migrations("payment_svc.adapters", "payment")


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name=NAME, system=SYSTEM, registry=REGISTRY, handlers=HANDLERS, prepare=prepare
    )
