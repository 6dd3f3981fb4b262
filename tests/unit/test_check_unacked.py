"""`orderflow check` counts unacked deliveries from the broker's statistics, which lag: a count
that is gone once the statistics refresh is not a backlog; one that stays is."""

from collections.abc import Awaitable, Callable

from orderflow.check import settled_unacked


def counts(
    *answers: dict[str, int] | None,
) -> tuple[Callable[[], Awaitable[dict[str, int] | None]], list[int]]:
    calls: list[int] = []

    async def count() -> dict[str, int] | None:
        calls.append(1)
        return answers[len(calls) - 1]

    return count, calls


async def test_a_stale_count_that_is_gone_after_the_refresh_is_no_backlog() -> None:
    count, calls = counts({"inventory_svc.commands": 1, "saga.events": 0}, {})
    assert await settled_unacked(count, lag=0) == {"inventory_svc.commands": 0, "saga.events": 0}
    assert len(calls) == 2


async def test_a_delivery_held_across_the_refresh_is_counted() -> None:
    count, _ = counts({"saga.events": 1, "order_svc.commands": 2}, {"saga.events": 1})
    assert await settled_unacked(count, lag=0) == {"saga.events": 1, "order_svc.commands": 0}


async def test_all_zeros_or_unknown_are_answered_at_once() -> None:
    for first in ({"saga.events": 0}, None):
        count, calls = counts(first)
        assert await settled_unacked(count, lag=0) == first
        assert len(calls) == 1


async def test_when_the_second_count_is_unknown_the_first_stands() -> None:
    count, _ = counts({"saga.events": 1}, None)
    assert await settled_unacked(count, lag=0) == {"saga.events": 1}
