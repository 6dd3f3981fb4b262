"""The composition root of order_svc."""

from __future__ import annotations

from libs.contracts.topology import QUEUES
from libs.pg.migrations import Migration, load
from libs.service.app import ServiceDefinition
from order_svc.handlers import HANDLERS

NAME = "order_svc"


def migrations() -> list[Migration]:
    return load("order_svc.adapters", "order")


def definition() -> ServiceDefinition:
    return ServiceDefinition(name=NAME, queue=QUEUES[NAME].name, handlers=HANDLERS)
