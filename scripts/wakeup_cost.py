"""What waking a sleeping process costs on this machine: the reason low load is not cheap.

    uv run python scripts/wakeup_cost.py              # a socket pair between two processes
    uv run python scripts/wakeup_cost.py --postgres   # and ``SELECT 1`` on one asyncpg connection

A hop of a saga is a chain of round trips (to PostgreSQL, to the broker) between processes that
sleep in between when the load is low. This measures one round trip, and the CPU both sides use
for it, when the two processes are busy (back to back) and when each round trip follows a pause
of 1 or 5 ms — as at 10 orders/s, where a service waits milliseconds for its next message. On a
virtual machine a wake-up of an idle CPU can cost many times the round trip itself; that cost is
paid by every statement and every frame of a lightly loaded system, and batching cannot help
when there is nothing to batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libs.testing.infra import DEFAULT_ADMIN_DSN  # noqa: E402

PAUSES_MS = (0.0, 1.0, 5.0)
TICK = os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def socket_pair(rounds: int) -> None:
    """Ping-pong one byte with a forked echo process."""
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # the echo side
        ours.close()
        while data := theirs.recv(64):
            theirs.send(data)
        os._exit(0)
    theirs.close()
    try:
        for pause_ms in PAUSES_MS:
            n = rounds * 10 if pause_ms == 0 else rounds
            own, other = _own_cpu(), _cpu_of(child)
            latencies = []
            for _ in range(n):
                started = time.perf_counter()
                ours.send(b"x")
                ours.recv(64)
                latencies.append(time.perf_counter() - started)
                if pause_ms:
                    time.sleep(pause_ms / 1000)
            print(
                f"socket pair, pause {pause_ms:.0f} ms: round trip p50 "
                f"{statistics.median(latencies) * 1e6:.0f} µs; CPU per round trip: this side "
                f"{(_own_cpu() - own) / n * 1e6:.0f} µs (its sleep's wake-up included), the "
                f"echo side {(_cpu_of(child) - other) / n * 1e6:.0f} µs"
            )
    finally:
        ours.close()
        os.waitpid(child, 0)


async def postgres(dsn: str, rounds: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        for pause_ms in PAUSES_MS:
            n = rounds * 5 if pause_ms == 0 else rounds
            other = _cpu_of(backend)
            latencies = []
            for _ in range(n):
                started = time.perf_counter()
                await conn.fetchval("SELECT 1")
                latencies.append(time.perf_counter() - started)
                if pause_ms:
                    await asyncio.sleep(pause_ms / 1000)
            print(
                f"PostgreSQL SELECT 1, pause {pause_ms:.0f} ms: p50 "
                f"{statistics.median(latencies) * 1e3:.3f} ms; the backend's CPU per statement "
                f"{(_cpu_of(backend) - other) / n * 1e6:.0f} µs"
            )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--postgres", action="store_true", help="also SELECT 1 on PostgreSQL")
    parser.add_argument("--dsn", default=os.environ.get("ORDERFLOW_ADMIN_DSN", DEFAULT_ADMIN_DSN))
    args = parser.parse_args()
    socket_pair(args.rounds)
    if args.postgres:
        asyncio.run(postgres(args.dsn, args.rounds))


if __name__ == "__main__":
    main()
