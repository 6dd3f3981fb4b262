"""A started service collects garbage less often, and not through what lives as long as it."""

import gc
from collections.abc import Iterator

import pytest

from libs.service.app import _tune_gc
from libs.settings import Settings


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_objects_alive_at_start_are_frozen_and_the_young_generation_waits_longer(
    restored: None,
) -> None:
    gc.unfreeze()
    keep = [object() for _ in range(1000)]
    _tune_gc(Settings().gc_threshold)
    assert gc.get_freeze_count() >= len(keep)
    assert gc.get_threshold()[0] == 20_000


def test_zero_keeps_pythons_threshold(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    _tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)
