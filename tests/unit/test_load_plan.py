"""The load generator's plan: exact shares, reproducible by seed, clear errors for bad mixes."""

from __future__ import annotations

from collections import Counter

import pytest

from orderflow.load import BadMix, apportion, parse_mix, plan


def test_a_mix_is_apportioned_exactly() -> None:
    assert apportion(100, {"ok": 80, "declined": 10, "out-of-stock": 10}) == {
        "ok": 80,
        "declined": 10,
        "out-of-stock": 10,
    }
    assert sum(apportion(7, {"ok": 1, "declined": 1, "out-of-stock": 1}).values()) == 7


def test_the_same_seed_gives_the_same_plan_and_another_seed_another_order() -> None:
    mix = parse_mix("ok=80,declined=10,out-of-stock=10")
    assert plan(50, mix, seed=3) == plan(50, mix, seed=3)
    assert plan(50, mix, seed=3) != plan(50, mix, seed=4)
    assert Counter(p.kind for p in plan(50, mix, seed=4)) == {
        "ok": 40,
        "declined": 5,
        "out-of-stock": 5,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok=80,free=20", "unknown order kind 'free'"),
        ("ok=eighty", "whole number"),
        ("ok=0", "add up to zero"),
    ],
)
def test_a_bad_mix_is_refused_with_a_sentence(text: str, message: str) -> None:
    with pytest.raises(BadMix, match=message):
        parse_mix(text)
