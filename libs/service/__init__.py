"""The service runtime: a service's definition, its handlers' context, the runner and ``main``."""

from libs.service.app import Runtime, ServiceDefinition, main, serve
from libs.service.context import Handler, HandlerContext, Preparer, Refuser
from libs.service.runner import MessageRunner, RunnerStats
from libs.service.upkeep import Pruner, Sampler

__all__ = [
    "Handler",
    "HandlerContext",
    "MessageRunner",
    "Preparer",
    "Pruner",
    "Refuser",
    "RunnerStats",
    "Runtime",
    "Sampler",
    "ServiceDefinition",
    "main",
    "serve",
]
