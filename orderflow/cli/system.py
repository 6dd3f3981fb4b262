"""Commands on the whole system: setup, up, check, status, asyncapi."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import typer
from rich.table import Table

from orderflow.cli.base import _settings, app, console, err, run

# -- setup, up, check --------------------------------------------------------------------------


@app.command()
def setup(
    reset: bool = typer.Option(
        False, "--reset", help="wipe orders, sagas, outboxes and re-seed demo customers and stock"
    ),
) -> None:
    """Create the databases, apply migrations, declare the broker topology, seed demo data."""
    from orderflow.setup import setup as do_setup

    report = run(do_setup(_settings(), reset=reset))
    for name in report.created_databases:
        console.print(f"created database [bold]{name}[/]")
    for service, applied in report.applied.items():
        for migration in applied:
            console.print(f"{service}: applied {migration}")
    console.print(
        "topology declared; demo customers and stock seeded" + (" (after a reset)" if reset else "")
    )


def _replicas(values: list[str]) -> dict[str, int]:
    from orderflow.system import SERVICES

    out: dict[str, int] = {}
    for value in values:
        match = re.fullmatch(r"([a-z_]+)=([1-9][0-9]?)", value)
        if not match or match[1] not in SERVICES:
            raise typer.BadParameter(
                f"{value!r}: expected SERVICE=N with SERVICE one of {', '.join(SERVICES)}"
            )
        out[match[1]] = int(match[2])
    return out


@app.command()
def up(
    replicas: list[str] = typer.Option([], "--replicas", help="e.g. --replicas payment_svc=2"),
    no_restart: bool = typer.Option(
        False, "--no-restart", help="stop reporting, do not restart, a child that dies"
    ),
    http_port_base: int = typer.Option(
        9100,
        "--http-port-base",
        min=0,
        max=65000,
        help="child i serves /metrics, /livez and /readyz on this port + i (0: any free port)",
    ),
) -> None:
    """Run all four services as supervised child processes until Ctrl-C."""
    import os

    from orderflow.supervisor import Supervisor

    counts = _replicas(replicas)

    async def main() -> None:
        env = {**os.environ, "ORDERFLOW_HTTP_PORT_BASE": str(http_port_base)}
        supervisor = Supervisor(env=env, replicas=counts, restart=not no_restart)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:  # stop_all also removes the copies of the services' secrets
            await supervisor.start_all()
            console.print(
                "[bold green]all services ready[/] — place an order from another terminal: "
                "orderflow place-order --customer alice --item WIDGET:2 --wait"
            )
            await stop.wait()
            console.print("stopping…")
        finally:
            await supervisor.stop_all()

    run(main())


@app.command()
def check(
    json_out: Path | None = typer.Option(None, "--json"),
    allow_dead_letters: bool = typer.Option(
        False,
        "--allow-dead-letters",
        help="list the broker's dead letters (with why they died) without failing",
    ),
) -> None:
    """Verify every invariant on a quiet system; print each violation; exit non-zero if any."""
    from rich.markup import escape

    from orderflow.check import check as do_check

    report = run(do_check(_settings(), allow_dead_letters=allow_dead_letters, count_unacked=True))
    if json_out:
        json_out.write_text(
            json.dumps(
                {
                    "ok": report.ok,
                    "violations": report.violations,
                    "notes": report.notes,
                    "figures": report.figures,
                },
                indent=2,
                default=str,
            )
        )
    for line in report.violations:
        console.print(f"[red]✗[/] {escape(line)}", highlight=False)
    for line in report.notes:
        console.print(f"[yellow]![/] {escape(line)}", highlight=False)
    console.print(f"orders: {report.figures.get('orders', {})}")
    if report.ok:
        console.print("[bold green]all invariants hold[/]")
        return
    console.print(f"[bold red]{len(report.violations)} violation(s)[/]")
    raise typer.Exit(1)


# -- orders -----------------------------------------------------------------------------------


@app.command()
def status() -> None:
    """Per service: outbox backlog and age, queue depth and consumers, dead letters; sagas by state."""
    from orderflow.status import status as get_status

    result = run(get_status(_settings()))
    table = Table(
        "service",
        "outbox pending",
        "oldest",
        "relay dead",
        "queue",
        "depth",
        "consumers",
        "dead letters",
    )
    for s in result.services:
        oldest = f"{s.oldest_pending_seconds:.1f}s" if s.oldest_pending_seconds is not None else "-"
        table.add_row(
            s.service,
            str(s.outbox_pending),
            oldest,
            str(s.outbox_dead),
            s.queue,
            str(s.queue_depth),
            str(s.consumers),
            str(s.dead_letters),
        )
    console.print(table)
    console.print(
        "sagas: " + (", ".join(f"{k} {v}" for k, v in sorted(result.sagas.items())) or "none")
    )
    console.print(
        f"in flight: {result.stuck} stuck (orderflow_saga_stuck), oldest "
        f"{result.oldest_seconds:.0f}s (orderflow_saga_oldest_seconds)"
    )


@app.command()
def asyncapi(
    out: Path = typer.Option(Path("docs/asyncapi.yaml"), "--out"),
    check_only: bool = typer.Option(False, "--check", help="fail if the file is not up to date"),
) -> None:
    """Write the AsyncAPI 3 document of the wire contract (generated from the registry)."""
    from orderflow.asyncapi import render

    text = render()
    if check_only:
        if not out.exists() or out.read_text() != text:
            err.print(
                f"[bold red]error:[/] {out} is stale; regenerate it with `orderflow asyncapi`"
            )
            raise typer.Exit(1)
        console.print(f"{out} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"wrote {out}")


# -- benchmarks -------------------------------------------------------------------------------
