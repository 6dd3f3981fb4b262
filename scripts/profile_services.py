"""Profile every service under a steady saga load with py-spy, and summarise where the time goes.

    uv run python scripts/profile_services.py --rate 40 --seconds 15

Runs the four services in a throw-away vhost and databases, places ``rate`` orders/s (the bench's
full-path order), records each service with ``py-spy record --nonblocking`` for ``seconds``, and
prints per service the share of samples by toolkit area (the innermost frame of orderflow's own
code or of a library) and the top leaf functions. Raw profiles go to var/profile-<service>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import os
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libs.settings import Settings  # noqa: E402
from orderflow.chaos.harness import isolated  # noqa: E402
from orderflow.client import OrderClient  # noqa: E402
from orderflow.setup import setup  # noqa: E402
from orderflow.supervisor import Supervisor  # noqa: E402

AREAS = (
    ("asyncpg", "asyncpg"),
    ("aiormq", "aiormq / aio-pika"),
    ("aio_pika", "aiormq / aio-pika"),
    ("pamqp", "aiormq / aio-pika"),
    ("opentelemetry", "tracing and metrics"),
    ("structlog", "logging"),
    ("pydantic", "pydantic"),
    ("json", "json"),
    ("libs/messages", "libs.messages (decode, validate)"),
    ("libs/service", "libs.service (runner)"),
    ("libs/outbox", "libs.outbox (relay, unit of work)"),
    ("libs/saga", "libs.saga"),
    ("libs/inbox", "libs.inbox"),
    ("uvloop", "event loop"),
    ("asyncio", "event loop"),
)


def summarise(path: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    areas: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaves[frames[-1][:110]] += n
        area = "other"
        for frame in reversed(frames):
            hit = next((label for key, label in AREAS if key in frame), None)
            if hit:
                area = hit
                break
        areas[area] += n
    return areas, leaves, total


async def main(rate: float, seconds: float) -> None:
    base = Settings()
    async with isolated(base) as env:
        os.environ.update(env)
        await setup(Settings())
        supervisor = Supervisor(env={**os.environ, **env}, restart=False, output=io.StringIO())
        await supervisor.start_all(timeout=90)
        client = await OrderClient.open(env["ORDERFLOW_AMQP_URL"])
        stop = asyncio.Event()

        async def load() -> None:
            items = [("SPROCKET", 1, Decimal("2.25"))]
            while not stop.is_set():
                await client.place(customer_id="carol", items=items)
                await asyncio.sleep(1 / rate)

        loader = asyncio.create_task(load())
        await asyncio.sleep(3)
        await asyncio.to_thread(Path("var").mkdir, exist_ok=True)
        spies = []
        for child in supervisor.children:
            assert child.process is not None
            out = Path(f"var/profile-{child.service}.txt")
            spies.append(
                (
                    child.service,
                    out,
                    await asyncio.create_subprocess_exec(
                        "py-spy", "record", "--nonblocking", "-p", str(child.process.pid),
                        "-d", str(int(seconds)), "-f", "raw", "-o", str(out), "-r", "200",
                        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                    ),
                )
            )  # fmt: skip
        for _, _, spy in spies:
            await spy.wait()
        stop.set()
        await loader
        await client.close()
        await supervisor.stop_all()
    for service, out, _ in spies:
        areas, leaves, total = summarise(out)
        print(f"\n== {service}: {total} samples")
        for area, n in areas.most_common(12):
            print(f"  {100 * n / total:5.1f} %  {area}")
        print("  top leaves:")
        for leaf, n in leaves.most_common(8):
            print(f"  {100 * n / total:5.1f} %  {leaf}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds))
