"""Sagas: a definition (steps, compensations, deadlines), a pure engine, their store and runtime."""

from libs.saga import store
from libs.saga.definition import Data, SagaDefinition, Step
from libs.saga.runtime import SagaCoordinator

__all__ = ["Data", "SagaCoordinator", "SagaDefinition", "Step", "store"]
