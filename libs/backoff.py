"""One exponential backoff for every retry loop: capped, jittered, and safe for any attempt.

Usage::

    from libs import backoff

    await asyncio.sleep(backoff.delay(attempt, base=settings.retry_base, cap=settings.retry_cap))

``attempt`` counts the failures so far: 1 after the first failure. The *ceiling* of the delay is
``min(cap, base * 2 ** (attempt - 1))`` — ``base``, ``2 * base``, ``4 * base``, … up to ``cap`` —
and the delay is drawn uniformly from ``[ceiling * (1 - jitter), ceiling]``:

- ``jitter=1.0`` (the default) is *full jitter*: anywhere in ``[0, ceiling]``. Retries of many
  clients that failed together (a deadlock, a broker restart) spread out instead of colliding
  again in lock step.
- ``jitter=0.5`` is *equal jitter*: at least half the ceiling, so the pause still grows.
- ``jitter=0.0`` is the plain deterministic exponential.

The exponent is clamped before anything is multiplied, so no attempt number overflows
(``attempt=10**6`` returns ``cap``-bounded values like ``attempt=60`` does), and an attempt below
1 counts as 1. It raises only for a nonsensical configuration (``base`` or ``cap`` not a finite
positive number, ``jitter`` outside ``[0, 1]``), never because a retry loop went on for long:
it is called from ``except`` blocks, where an exception would kill the loop it is meant to slow
down.
"""

from __future__ import annotations

import math
import random

__all__ = ["ceiling", "delay"]


def ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The largest delay of ``attempt``: ``min(cap, base * 2 ** (attempt - 1))``, no jitter."""
    if not (math.isfinite(base) and base > 0):
        raise ValueError(f"backoff base must be a finite positive number of seconds, got {base}")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"backoff cap must be a finite positive number of seconds, got {cap}")
    if base >= cap:
        return cap
    # the first exponent at which base * 2**n reaches cap; beyond it the answer is cap anyway
    enough = math.ceil(math.log2(cap / base))
    exponent = min(max(attempt, 1) - 1, enough)
    return min(cap, math.ldexp(base, exponent))


def delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 1.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = after the first failure).

    Uniform in ``[c * (1 - jitter), c]`` where ``c = ceiling(attempt, base=base, cap=cap)``;
    ``rng`` replaces the module's random generator (for tests).
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"backoff jitter must be within [0, 1], got {jitter}")
    top = ceiling(attempt, base=base, cap=cap)
    if jitter == 0.0:
        return top
    draw = (rng or random).random()  # in [0, 1)
    return top * (1.0 - jitter * draw)
