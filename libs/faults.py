"""Fault points: places in the code where the chaos harness may crash a process on purpose.

Disabled unless the setting ``faults`` (``ORDERFLOW_FAULTS``) is set (or a test passes its own :class:`Faults`), so in
production a fault point is one dictionary lookup. Syntax: ``name=probability[,name=probability]``,
e.g. ``consumer.after_commit=0.02,relay.after_publish=0.05``; ``ORDERFLOW_FAULTS_SEED`` makes the
sequence of hits reproducible. A hit ends the process at once with exit code 137, as SIGKILL
would: no finally blocks, no acks, no marks. Just before, it writes one line to stderr,
``fault.fired point=<name> pid=<pid>`` (:data:`MARKER`), so that the chaos harness can count the
crashes that really happened at a named point, not the ones it hoped for.

Points: ``consumer.after_commit`` (state committed, delivery not acked) and
``relay.after_publish`` (message confirmed by the broker, row not marked published).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping

from libs.errors import ConfigurationError

__all__ = [
    "EXIT_CODE",
    "KNOWN_POINTS",
    "MARKER",
    "NO_FAULTS",
    "Faults",
]

KNOWN_POINTS = frozenset({"consumer.after_commit", "relay.after_publish"})
MARKER = "fault.fired"
EXIT_CODE = 137


def _die(point: str) -> None:
    # os.write: unbuffered, nothing else runs before the exit (os._exit skips every flush)
    os.write(2, f"{MARKER} point={point} pid={os.getpid()}\n".encode())
    os._exit(EXIT_CODE)


class Faults:
    def __init__(
        self,
        points: Mapping[str, float] | None = None,
        *,
        seed: int | None = None,
        action: Callable[[str], None] = _die,
    ) -> None:
        unknown = set(points or {}) - KNOWN_POINTS
        if unknown:
            raise ConfigurationError(
                f"unknown fault points {sorted(unknown)}; known: {sorted(KNOWN_POINTS)}"
            )
        self._points = dict(points or {})
        self._random = random.Random(seed)
        self._action = action
        self.hits: dict[str, int] = {}

    @classmethod
    def from_spec(cls, spec: str, seed: int | None = None) -> Faults:
        """From the settings ``faults`` (``name=probability,…``) and ``faults_seed``."""
        spec = spec.strip()
        if not spec:
            return cls()
        points: dict[str, float] = {}
        for part in spec.split(","):
            name, _, value = part.partition("=")
            try:
                points[name.strip()] = float(value)
            except ValueError:
                raise ConfigurationError(
                    f"ORDERFLOW_FAULTS: {part!r} is not name=probability"
                ) from None
        return cls(points, seed=seed)

    def point(self, name: str) -> None:
        """Maybe crash here."""
        probability = self._points.get(name)
        if probability and self._random.random() < probability:
            self.hits[name] = self.hits.get(name, 0) + 1
            self._action(name)


NO_FAULTS = Faults()
