"""Counters are tallies read at collection: what Prometheus sees is every add, summed per
attribute set, in whatever order the attributes were given."""

from __future__ import annotations

import re

import pytest

from libs.observability.metrics import METRICS, Tally, exposition, setup_metrics


def test_a_tally_sums_per_attribute_set_whatever_their_order() -> None:
    tally = Tally()
    tally.add(1, {"a": "x", "b": "y"})
    tally.add(2, {"b": "y", "a": "x"})
    tally.add(5, {"a": "z"})
    tally.add(1)
    assert tally.value({"a": "x", "b": "y"}) == 3
    assert tally.value({"a": "z"}) == 5
    assert tally.value() == 1
    observed = {frozenset(o.attributes.items()): o.value for o in tally.observe()}
    assert observed == {
        frozenset({("a", "x"), ("b", "y")}): 3,
        frozenset({("a", "z")}): 5,
        frozenset(): 1,
    }


def test_a_tally_only_grows() -> None:
    tally = Tally()
    with pytest.raises(ValueError, match="only grows"):
        tally.add(-1, {"a": "x"})
    assert tally.observe() == []


def test_prometheus_sees_the_tallied_counts() -> None:
    setup_metrics("test")
    pool = {"orderflow.pool": "tally-test"}
    before = _sample("orderflow_db_client_operations_total", 'orderflow_pool="tally-test"')
    for _ in range(7):
        METRICS.db_operations.add(1, pool)
    after = _sample("orderflow_db_client_operations_total", 'orderflow_pool="tally-test"')
    assert after - before == 7
    # read again with nothing added: the same total, not the adds counted twice
    assert _sample("orderflow_db_client_operations_total", 'orderflow_pool="tally-test"') == after
    assert "# TYPE orderflow_db_client_operations_total counter" in exposition().decode()


def _sample(name: str, label: str) -> float:
    for line in exposition().decode().splitlines():
        match = re.match(rf"^{name}\{{([^}}]*)\}} (\S+)$", line)
        if match and label in match[1]:
            return float(match[2])
    return 0.0
