"""libs.backoff: exponential, capped, jittered, and safe for any attempt number."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs import backoff


def test_without_jitter_the_delay_doubles_from_base_until_the_cap() -> None:
    got = [backoff.delay(n, base=0.1, cap=5.0, jitter=0.0) for n in range(1, 10)]
    assert got == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])


def test_the_cap_is_respected_and_reached() -> None:
    assert backoff.delay(7, base=0.1, cap=5.0, jitter=0.0) == 5.0
    assert backoff.delay(3, base=10.0, cap=5.0, jitter=0.0) == 5.0  # base above the cap
    assert backoff.ceiling(1, base=5.0, cap=5.0) == 5.0


@pytest.mark.parametrize("attempt", [1_000, 1_025, 10**6, 10**18, 2**200])
def test_a_huge_attempt_neither_overflows_nor_exceeds_the_cap(attempt: int) -> None:
    assert backoff.delay(attempt, base=0.1, cap=5.0, jitter=0.0) == 5.0
    jittered = backoff.delay(attempt, base=0.1, cap=5.0)
    assert 0.0 <= jittered <= 5.0 and math.isfinite(jittered)


@pytest.mark.parametrize("attempt", [0, -1, -(10**9)])
def test_an_attempt_below_one_counts_as_the_first(attempt: int) -> None:
    assert backoff.delay(attempt, base=0.25, cap=5.0, jitter=0.0) == 0.25


def test_full_jitter_spreads_over_zero_to_the_ceiling() -> None:
    rng = random.Random(7)
    draws = [backoff.delay(4, base=0.1, cap=5.0, rng=rng) for _ in range(2000)]
    assert all(0.0 <= d <= 0.8 for d in draws)
    assert min(draws) < 0.05 and max(draws) > 0.75  # the whole range is used
    assert len(set(draws)) > 1900  # not in lock step


def test_equal_jitter_keeps_at_least_half_the_ceiling() -> None:
    rng = random.Random(11)
    draws = [backoff.delay(3, base=1.0, cap=60.0, jitter=0.5, rng=rng) for _ in range(2000)]
    assert all(2.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 2.1 and max(draws) > 3.9


def test_the_jitter_extremes_of_the_generator_stay_in_range() -> None:
    class Fixed(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def random(self) -> float:
            return self.value

    assert backoff.delay(2, base=1.0, cap=9.0, rng=Fixed(0.0)) == 2.0
    assert backoff.delay(2, base=1.0, cap=9.0, rng=Fixed(0.999999)) == pytest.approx(0.0, abs=1e-5)
    assert backoff.delay(2, base=1.0, cap=9.0, jitter=0.25, rng=Fixed(0.999999)) == pytest.approx(
        1.5, abs=1e-5
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0, "cap": 1.0},
        {"base": -1.0, "cap": 1.0},
        {"base": 1.0, "cap": 0.0},
        {"base": math.inf, "cap": 1.0},
        {"base": 1.0, "cap": math.inf},
        {"base": math.nan, "cap": 1.0},
        {"base": 1.0, "cap": 2.0, "jitter": 1.5},
        {"base": 1.0, "cap": 2.0, "jitter": -0.1},
    ],
)
def test_a_nonsensical_configuration_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        backoff.delay(1, **kwargs)


@given(
    attempt=st.integers(min_value=-(2**70), max_value=2**70),
    base=st.floats(min_value=1e-6, max_value=1e6),
    cap=st.floats(min_value=1e-6, max_value=1e6),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_any_input_gives_a_finite_delay_within_its_bounds(
    attempt: int, base: float, cap: float, jitter: float
) -> None:
    top = backoff.ceiling(attempt, base=base, cap=cap)
    assert math.isfinite(top) and 0 < top <= cap
    assert top >= min(cap, base)
    got = backoff.delay(attempt, base=base, cap=cap, jitter=jitter)
    assert top * (1 - jitter) - 1e-12 <= got <= top


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=1e-3, max_value=10.0),
    cap=st.floats(min_value=1e-3, max_value=100.0),
)
def test_the_ceiling_never_shrinks_from_one_attempt_to_the_next(
    attempt: int, base: float, cap: float
) -> None:
    assert backoff.ceiling(attempt + 1, base=base, cap=cap) >= backoff.ceiling(
        attempt, base=base, cap=cap
    )
