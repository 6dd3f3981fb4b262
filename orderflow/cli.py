"""The ``orderflow`` command line. Commands turn arguments into calls; errors become sentences."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from libs.errors import OrderflowError
from libs.settings import Settings

T = TypeVar("T")
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="orderflow: orders over an outbox, a broker and a saga.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures.")
app.add_typer(bench_app, name="bench")
console = Console()
err = Console(stderr=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn known failures into one clear line and exit code 1."""
    try:
        return asyncio.run(coro)
    except OrderflowError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(
            f"[bold red]error:[/] {exc}. Is PostgreSQL running? Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`."
        )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@bench_app.command("relay")
def bench_relay(
    quick: bool = typer.Option(False, help="fewer messages and shorter windows"),
    json_out: Path = typer.Option(
        Path("var/bench-relay.json"), "--json", help="where to write the figures"
    ),
) -> None:
    """Relay latency and throughput against raw publish-with-confirms and a polling relay."""
    from orderflow.bench import relay
    from orderflow.bench.stats import machine

    settings = Settings()
    from libs.messaging.admin import with_vhost

    console.print("[dim]running the relay benchmark (about 2 minutes)…[/]")
    results = run(
        relay.run(
            amqp_base=with_vhost(settings.amqp_url, "/"),
            admin_dsn=settings.pg_admin_dsn,
            quick=quick,
        )
    )
    results["machine"] = machine()
    table = Table(title="outbox relay", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row(
        "raw publish with confirms", f"{results['raw_publish_confirms_msg_s']:,.0f} msg/s"
    )
    table.add_row("relay drain", f"{results['relay_drain_msg_s']:,.0f} msg/s")
    table.add_row("relay ÷ raw", f"{results['relay_vs_raw']:.0%}")
    for mode, lat in results["latency_low_load"].items():
        table.add_row(
            f"commit→confirmed, {mode}, 100 msg/s",
            f"p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms",
        )
    for mode, rate in results["idle_tx_per_s"].items():
        table.add_row(f"idle database load, {mode}", f"{rate:.2f} tx/s")
    for mode, rate in results["commit_rate_4_writers_tx_s"].items():
        table.add_row(f"writer commits, 4 writers, wake-up {mode}", f"{rate:,.0f} tx/s")
    console.print(table)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"[dim]figures written to {json_out}[/]")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(app())
