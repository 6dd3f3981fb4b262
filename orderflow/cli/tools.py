"""The proving tools: chaos and bench."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from orderflow.cli.base import _settings, app, console, run

bench_app = typer.Typer(
    help="Benchmarks that print figures (no subcommand: the whole benchmark).",
    invoke_without_command=True,
)
app.add_typer(bench_app, name="bench")


@app.command()
def chaos(
    scenario: str = typer.Option(
        ...,
        "--scenario",
        help="the scenario, e.g. kill-storm or replicas (an unknown name lists them all; "
        "docs/reliability.md says what each does)",
    ),
    duration: float = typer.Option(30.0, "--duration", min=1, help="seconds of faults and load"),
    rate: float = typer.Option(10.0, "--rate", min=0.5, max=500, help="orders per second"),
    seed: int = typer.Option(1, "--seed"),
    json_out: Path | None = typer.Option(
        None, "--json", help="default var/chaos/<scenario>-<seed>.json"
    ),
) -> None:
    """Run the services under faults, heal, and check that nothing was lost or charged twice."""
    from orderflow.chaos.harness import run_chaos
    from orderflow.chaos.scenarios import SCENARIOS

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"--scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
    out = json_out or Path(f"var/chaos/{scenario}-{seed}.json")
    console.print(
        f"[bold]chaos[/] {scenario}: {duration:.0f} s at {rate:g} orders/s, seed {seed}, "
        "in a throw-away vhost and databases…"
    )
    report = run(
        run_chaos(
            scenario,
            duration=duration,
            rate=rate,
            seed=seed,
            settings=_settings(),
            log_path=out.with_suffix(".log"),
        )
    )
    table = Table("figure", "value", title=f"chaos report: {scenario}")
    for label, value in (
        ("orders placed", report.placed),
        ("not placed (broker refused for 60 s)", report.not_placed),
        (
            "terminal",
            f"{report.terminal} ({report.confirmed} confirmed, {report.rejected} rejected)",
        ),
        ("lost", len(report.lost)),
        ("charged twice", report.charged_twice),
        ("refunds", report.refunds),
        ("duplicates absorbed by inboxes", report.duplicates_absorbed),
        (
            "dead letters",
            f"{report.dead_letters} (bad messages injected: {report.bad_messages_injected})",
        ),
        (
            "time to quiesce",
            f"{report.time_to_quiesce:.1f} s"
            if report.time_to_quiesce is not None
            else "not quiet",
        ),
    ):
        table.add_row(label, str(value))
    for fault, count in sorted(report.faults.items()):
        if ":" not in fault:
            table.add_row(f"fault: {fault}", str(count))
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json())
    console.print(f"[dim]report: {out}; service logs: {out.with_suffix('.log')}[/]")
    for violation in report.violations:
        console.print(f"[red]✗[/] {violation}")
    if not report.ok:
        console.print(f"[bold red]{len(report.violations)} violation(s)[/]")
        raise typer.Exit(1)
    console.print("[bold green]nothing lost, nothing charged twice, every invariant holds[/]")


# -- sagas ------------------------------------------------------------------------------------


@bench_app.callback()
def bench_all(
    ctx: typer.Context,
    quick: bool = typer.Option(False, help="shorter steps, fewer messages"),
    json_out: Path = typer.Option(Path("var/bench.json"), "--json"),
) -> None:
    """Raw broker and database limits, relay, saga throughput and latency, efficiency, memory."""
    if ctx.invoked_subcommand is not None:
        return
    import io

    from orderflow.bench import system
    from orderflow.bench.stats import machine

    settings = _settings()
    console.print("[dim]running the benchmark (about 6 minutes; --quick about 3)…[/]")
    log = io.StringIO()
    results = run(system.run(settings=settings, quick=quick, log=log))
    results["machine"] = machine()
    saga = results["saga"]
    table = Table("figure", "value", title="orderflow benchmark")
    table.add_row(
        "raw publish with confirms (quorum queue)",
        f"{results['raw_publish_confirms_msg_s']:,.0f} msg/s",
    )
    table.add_row(
        "raw consume with acks (quorum queue)", f"{results['raw_consume_ack_msg_s']:,.0f} msg/s"
    )
    table.add_row(
        "raw publish+consume, one message", f"{results['raw_publish_and_consume_msg_s']:,.0f} msg/s"
    )
    table.add_row(
        "asyncpg single-row commits, 4 connections",
        f"{results['raw_pg_commits_4_conns_tx_s']:,.0f} tx/s",
    )
    for mode, lat in results["relay_latency"].items():
        table.add_row(
            f"relay commit→confirmed, {mode}",
            f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms",
        )
    table.add_row("relay idle database load", f"{results['relay_idle_tx_per_s']:.2f} tx/s")
    for step in saga["steps"]:
        table.add_row(
            f"sagas offered {step['offered_per_s']:.0f}/s",
            f"completed {step['completed_per_s']:.0f}/s, p50 {step['p50_ms']:.0f} ms, p99 {step['p99_ms']:.0f} ms",
        )
    table.add_row("max sustained (20 s)", f"[bold]{saga['max_sustained_per_s']:.0f} sagas/s[/]")
    for key, label in (("latency_at_25pct", "25 %"), ("latency_at_50pct", "50 %")):
        lat = saga[key]
        table.add_row(
            f"place→terminal at {label} of max ({lat['offered_per_s']:.0f}/s)",
            f"p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms",
        )
    table.add_row("efficiency (saga msgs/s ÷ raw publish+consume)", f"{results['efficiency']:.0%}")
    for name in saga["memory_start_mib"]:
        table.add_row(
            f"RSS {name}: start → run → second run",
            f"{saga['memory_start_mib'][name]} → {saga['memory_after_run_mib'].get(name)} → "
            f"{saga['memory_after_second_run_mib'].get(name)} MiB",
        )
    console.print(table)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"[dim]figures written to {json_out}[/]")


@bench_app.command("relay")
def bench_relay(
    quick: bool = typer.Option(False, help="fewer messages and shorter windows"),
    json_out: Path = typer.Option(
        Path("var/bench-relay.json"), "--json", help="where to write the figures"
    ),
) -> None:
    """Relay latency and throughput against raw publish-with-confirms and a polling relay."""
    from libs.messaging.admin import with_vhost
    from orderflow.bench import relay
    from orderflow.bench.stats import machine

    settings = _settings()
    console.print("[dim]running the relay benchmark (about 2 minutes)…[/]")
    results = run(
        relay.run(
            amqp_base=with_vhost(settings.amqp_url, "/"),
            admin_dsn=settings.pg_admin_dsn,
            quick=quick,
        )
    )
    results["machine"] = machine()
    table = Table(title="outbox relay")
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
