"""Where a saga's CPU goes on this machine: every process, the broker and the database included.

    uv run python scripts/cpu_split.py --rate 40 --seconds 30

Runs the four services in a throw-away vhost and databases, places ``rate`` one-line orders/s
for ``seconds`` (after 3 s of warm-up), waits until every order ended, and prints the CPU time
each process used meanwhile — the services, PostgreSQL's backends, RabbitMQ's Erlang VM, this
load generator — per CONFIRMED order, with the services' own counters per delivery (CPU ms,
PostgreSQL round trips, broker operations). Read from ``/proc``, so Linux only. At a rate the
machine cannot sustain, the total is simply all the CPU there is divided by the orders.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libs.settings import Settings  # noqa: E402
from orderflow.bench.system import counters, per_delivery  # noqa: E402
from orderflow.chaos.harness import isolated  # noqa: E402
from orderflow.client import OrderClient  # noqa: E402
from orderflow.setup import setup  # noqa: E402
from orderflow.supervisor import Supervisor  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_process(names: dict[int, str]) -> Counter[str]:
    """CPU seconds so far of every process on the machine, grouped: the named pids, PostgreSQL,
    the Erlang VM, the rest by command name."""
    out: Counter[str] = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / TICK
        name = names.get(int(pid)) or (
            "postgres" if command.startswith("postgres") else "beam (RabbitMQ)"
            if "beam" in command else f"other: {command}"
        )  # fmt: skip
        out[name] += seconds
    return out


async def main(rate: float, seconds: float) -> None:
    async with isolated(Settings()) as env:
        os.environ.update(env)
        await setup(Settings())
        supervisor = Supervisor(env={**os.environ, **env}, restart=False, output=io.StringIO())
        await supervisor.start_all(timeout=90)
        client = await OrderClient.open(env["ORDERFLOW_AMQP_URL"])
        names = {c.process.pid: c.service for c in supervisor.children if c.process}
        names[os.getpid()] = "load generator"
        placed: list[str] = []

        async def load(duration: float) -> None:
            start, n = time.monotonic(), 0
            while time.monotonic() < start + duration:
                outcome = await client.place(
                    customer_id="carol", items=[("SPROCKET", 1, Decimal("2.25"))]
                )
                placed.append(outcome.order_id)
                n += 1
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))

        await load(3)  # warm-up: pools filled, statements prepared
        await client.wait(placed, timeout=60)
        placed.clear()
        counted, before, start = await counters(supervisor), cpu_by_process(names), time.monotonic()
        await load(seconds)
        await client.wait(placed, timeout=120)
        wall = time.monotonic() - start
        after, counted_after = cpu_by_process(names), await counters(supervisor)
        confirmed = sum(client.outcomes[o].status == "CONFIRMED" for o in placed)
        latency = sorted(client.outcomes[o].latency_ms or 0.0 for o in placed)
        print(
            f"offered {rate:g}/s for {seconds:g} s: {confirmed}/{len(placed)} CONFIRMED, "
            f"{confirmed / wall:.1f}/s; place → terminal p50 {latency[len(latency) // 2]:.1f} ms, "
            f"p99 {latency[int(len(latency) * 0.99)]:.1f} ms"
        )
        total = 0.0
        for name in sorted(after, key=lambda k: before.get(k, 0) - after[k]):
            used = after[name] - before.get(name, 0)
            if used < 0.05 * seconds / 20:
                continue
            total += used
            print(
                f"  {name:24s} {used:6.2f} s CPU  {1000 * used / max(confirmed, 1):6.2f} ms/order"
                f"  {100 * used / wall:5.1f} % of a core"
            )
        print(f"  total {1000 * total / max(confirmed, 1):.2f} ms CPU per CONFIRMED order")
        for service, figures in per_delivery(counted, counted_after).items():
            print(f"  {service}: {figures}")
        await client.close()
        await supervisor.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds))
