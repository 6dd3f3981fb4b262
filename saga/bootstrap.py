"""The composition root of the saga coordinator."""

from __future__ import annotations

from contracts import REGISTRY
from contracts.system import SYSTEM
from libs.pg import Migration
from libs.saga import SagaCoordinator, store
from libs.service import Pruner, Runtime, ServiceDefinition
from libs.settings import Settings
from saga.domain.order_saga import order_saga

NAME = "saga"


def migrations() -> list[Migration]:
    return store.migrations()


def coordinator(settings: Settings) -> SagaCoordinator:
    definition = order_saga(deadline=settings.saga.step_deadline, retries=settings.saga.retries)
    return SagaCoordinator(
        definition, registry=REGISTRY, source=f"/orderflow/{NAME}", sweep=settings.saga.timer_sweep
    )


def definition(settings: Settings | None = None) -> ServiceDefinition:
    settings = settings or Settings()
    coord = coordinator(settings)

    async def timers(runtime: Runtime) -> None:
        await coord.run_timers(runtime.pool, runtime.wakeup)

    return ServiceDefinition(
        name=NAME,
        system=SYSTEM,
        registry=REGISTRY,
        handlers=dict.fromkeys(coord.definition.replies(), coord.handle),
        background=(timers,),
        on_stop=(coord.stop,),
        samplers=(coord.gauges,),
        prepare=coord.prepare,
        pruners=(Pruner("saga_instance", settings.retention.sagas, coord.prune),),
    )
