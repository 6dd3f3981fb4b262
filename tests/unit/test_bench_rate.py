"""The bench's completion rate: a system that keeps up is reported as keeping up, one that
cannot is reported at its own maximum (orders simulated by a single-server queue)."""

from orderflow.bench.system import steady_rate, sustainable


def simulate(offered: float, capacity: float, seconds: float, pipeline: float) -> dict[str, float]:
    """Orders placed at ``offered``/s for ``seconds``, served one at a time at ``capacity``/s
    after a fixed ``pipeline`` delay; returns what ``offer`` reports."""
    placed = [i / offered for i in range(int(offered * seconds))]
    ended: list[float] = []
    free_at = 0.0
    for t in placed:
        free_at = max(t + pipeline, free_at) + 1 / capacity
        ended.append(free_at)
    latencies = [1000 * (e - p) for p, e in zip(placed, ended, strict=True)]
    return {
        "offered_per_s": offered,
        "completed_per_s": steady_rate(ended, 0.0, seconds, latencies),
        "completed_in_window_per_s": sum(1 for e in ended if e <= seconds) / seconds,
    }


def test_a_system_that_keeps_up_is_sustainable_though_its_last_orders_end_after_the_step() -> None:
    step = simulate(offered=75, capacity=200, seconds=10, pipeline=0.6)
    assert step["completed_in_window_per_s"] < 0.95 * 75  # what the bench used to count
    assert abs(step["completed_per_s"] - 75) < 1.0
    assert sustainable(step)


def test_a_system_that_cannot_keep_up_is_reported_at_its_own_rate() -> None:
    step = simulate(offered=75, capacity=50, seconds=10, pipeline=0.5)
    assert abs(step["completed_per_s"] - 50) < 2.0
    assert not sustainable(step)


def test_nothing_completed_is_zero() -> None:
    assert steady_rate([], 0.0, 10.0, []) == 0.0
