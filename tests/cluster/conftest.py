"""The local three-node cluster (scripts/cluster.sh): started for these tests when it is down,
and stopped afterwards if they started it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "cluster.sh"


def cluster(*args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/cluster.sh {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout.strip()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """The cluster's URL (guest, vhost /), every node running."""
    was_up = "down" not in cluster("status")
    url = cluster("start")
    yield url.splitlines()[-1]
    if not was_up:
        cluster("stop")
