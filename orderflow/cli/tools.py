"""The proving tools: chaos and bench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
        ("commands the saga re-sent on a deadline", report.saga_resends),
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
    if report.recovery_after_node_kills_s:
        shown = ", ".join(
            "—" if s is None else f"{s:.1f}" for s in report.recovery_after_node_kills_s
        )
        table.add_row("first order completed after each node kill (s)", shown)
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
    cluster_url: str | None = typer.Option(
        None,
        "--cluster-url",
        help="also run the saga on this broker cluster (`scripts/cluster.sh url`)",
    ),
    cluster_node: str = typer.Option(
        "of1@localhost", "--cluster-node", help="the cluster node rabbitmqctl administers"
    ),
) -> None:
    """Raw limits, relay, saga throughput and latency, per-service costs, metrics cost, memory;
    with --cluster-url, the saga's maximum and latency on a broker cluster beside them."""
    if ctx.invoked_subcommand is not None:
        return
    import io

    from orderflow.bench import system
    from orderflow.bench.stats import machine

    settings = _settings()
    console.print("[dim]running the benchmark (about 10 minutes; --quick about 5)…[/]")
    log = io.StringIO()
    cluster = None
    if cluster_url:
        cluster = settings.model_copy(
            update={"amqp_url": cluster_url, "rabbitmq_node": cluster_node}
        )
    results = run(system.run(settings=settings, quick=quick, log=log, cluster=cluster))
    results["machine"] = machine()
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=2, default=str))
    _raw_table(results)
    if results["implausible"]:
        for sentence in results["implausible"]:
            console.print(f"[red]implausible raw limit: {sentence}[/]")
        console.print("[red]the machine is not fit to measure on (something else is running?)[/]")
        raise typer.Exit(2)
    saga = results["saga"]
    _saga_tables(results, saga)
    console.print(f"[dim]figures written to {json_out}[/]")
    if not saga["all_confirmed"]:
        console.print(
            f"[red]{saga['orders_placed'] - saga['orders_confirmed']} of "
            f"{saga['orders_placed']} bench orders did not end CONFIRMED[/]"
        )
        raise typer.Exit(1)
    console.print(f"all {saga['orders_placed']} bench orders ended CONFIRMED")


def _raw_table(results: dict[str, Any]) -> None:
    table = Table("raw limit (measured)", "value", title="the machine")
    for key, label, unit in (
        ("raw_publish_confirms_msg_s", "publish with confirms (quorum queue)", "msg/s"),
        ("raw_consume_ack_msg_s", "consume with acks (quorum queue)", "msg/s"),
        ("raw_publish_and_consume_msg_s", "publish and consume at once, one queue", "msg/s"),
        ("raw_pg_commits_4_conns_tx_s", "asyncpg single-row commits, 4 connections", "tx/s"),
        ("raw_trip_p50_ms", "one message, publish → delivery, quorum queue, p50 (quiet)", "ms"),
        ("raw_client_trip_p50_ms", "the same, exclusive queue without acks (the client's)", "ms"),
        ("raw_hop_transaction_p50_ms", "the leanest hop transaction, p50 (quiet)", "ms"),
    ):
        if key in results:
            value = results[key]
            table.add_row(label, f"{value:.2f} {unit}" if unit == "ms" else f"{value:,.0f} {unit}")
    console.print(table)


def _saga_tables(results: dict[str, Any], saga: dict[str, Any]) -> None:
    from orderflow.bench.raw import TRANSACTIONS_PER_SAGA, TRIPS_PER_SAGA, latency_floor_ms

    table = Table("figure", "measured", "target", title="orderflow benchmark")
    for mode, lat in results["relay_latency"].items():
        table.add_row(
            f"relay commit→confirmed, {mode}",
            f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms",
            "p50 ≤ 2 ms, p99 ≤ 10 ms" if mode == "notify" else "",
        )
    table.add_row("relay idle database load", f"{results['relay_idle_tx_per_s']:.2f} tx/s", "")
    for step in saga["steps"]:
        held = " (hold)" if "held_at" in step else ""
        table.add_row(
            f"offered {step['offered_per_s']:.0f}/s{held}",
            f"{step['completed_per_s']:.0f} CONFIRMED/s, p50 {step['p50_ms']:.0f} ms, "
            f"p99 {step['p99_ms']:.0f} ms",
            "",
        )
    peak = saga["max_sustained_per_s"]
    table.add_row("max sustained (hold, 95 % rule)", f"[bold]{peak:.0f} sagas/s[/]", "≥ 300")
    vacuums = saga.get("vacuum_between_steps_s") or []
    if vacuums:
        table.add_row(
            "vacuum + checkpoint before each step (outside it)",
            f"{len(vacuums)} times, {max(vacuums):.2f} s at most, {sum(vacuums):.1f} s in all",
            "",
        )
    table.add_row(
        "efficiency (8 msgs/saga ÷ raw publish+consume)", f"{results['efficiency']:.0%}", "≥ 40 %"
    )
    floor = latency_floor_ms(results)
    if floor is not None:
        table.add_row(
            f"latency floor: {TRIPS_PER_SAGA} broker trips + {TRANSACTIONS_PER_SAGA} transactions",
            f"{floor:.1f} ms (measured one at a time, nothing else running)",
            "",
        )
    for share, target in ((10, "p50 ≤ 15 ms"), (25, ""), (50, "p50 ≤ 20 ms, p99 ≤ 100 ms")):
        lat = saga[f"latency_at_{share}pct"]
        table.add_row(
            f"place→terminal at {share} % of max ({lat['offered_per_s']:.0f}/s)",
            f"p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms",
            target,
        )
    if "cluster" in results:
        c = results["cluster"]
        lat = c["latency_at_50pct"]
        single = saga["latency_at_50pct"]
        table.add_row(
            "one broker node: max; p50/p99 at 50 %",
            f"{peak:.0f} sagas/s; {single['p50_ms']:.0f}/{single['p99_ms']:.0f} ms",
            "",
        )
        table.add_row(
            f"{c['nodes']}-node broker cluster: max; p50/p99 at 50 %",
            f"{c['max_sustained_per_s']:.0f} sagas/s; {lat['p50_ms']:.0f}/{lat['p99_ms']:.0f} ms",
            "",
        )
    cap = saga["metrics_capacity_per_s"]
    on, off = sum(cap["on"]) / len(cap["on"]), sum(cap["off"]) / len(cap["off"])
    table.add_row(
        f"capacity, metrics on / off ({len(cap['on'])} runs each, alternated)",
        f"{on:.0f} / {off:.0f} sagas/s ({(off - on) / off:+.1%} cost)",
        "cost ≤ 3 %",
    )
    cpu = saga.get("metrics_service_cpu_ms_per_order")
    if cpu:
        on, off = sum(cpu["on"]) / len(cpu["on"]), sum(cpu["off"]) / len(cpu["off"])
        table.add_row(
            "the services' CPU per CONFIRMED order then, on / off",
            f"{on:.2f} / {off:.2f} ms ({(on - off) / off:+.1%})",
            "",
        )
    for name in saga["memory_start_mib"]:
        table.add_row(
            f"RSS {name}: start → run → second run",
            f"{saga['memory_start_mib'][name]} → {saga['memory_after_run_mib'].get(name)} → "
            f"{saga['memory_after_second_run_mib'].get(name)} MiB",
            "flat",
        )
    console.print(table)
    per = Table(
        "process", "deliveries", "CPU ms/delivery", "PostgreSQL round trips/delivery",
        "RabbitMQ operations/delivery", title="where the time goes (from the start to the hold)",
    )  # fmt: skip
    for name, f in saga["per_service"].items():
        per.add_row(
            name,
            f"{f['deliveries']:,.0f}",
            f"{f['cpu_ms_per_delivery']:.2f}",
            f"{f['pg_round_trips_per_delivery']:.2f}",
            f"{f['amqp_operations_per_delivery']:.2f}",
        )
    console.print(per)


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


@bench_app.command("console")
def bench_console(
    sagas: int = typer.Option(100_000, "--sagas", min=100, help="finished sagas (and orders)"),
    letters: int = typer.Option(1_000, "--letters", min=1, help="dead letters"),
    rounds: int = typer.Option(30, "--rounds", min=5, help="requests per page"),
    json_out: Path = typer.Option(Path("var/bench-console.json"), "--json"),
) -> None:
    """Each console page's response time with a large history: p50, p95, max against 300 ms."""
    from orderflow.bench.console import console_bench
    from orderflow.bench.stats import machine

    console.print(f"[dim]seeding {sagas:,} finished sagas and {letters:,} dead letters…[/]")
    results = run(console_bench(_settings(), sagas=sagas, letters=letters, rounds=rounds))
    results["machine"] = machine()
    table = Table("page", "p50 ms", "p95 ms", "max ms", title="console, real HTTP")
    for name, page in results["pages"].items():
        table.add_row(name, f"{page['p50_ms']}", f"{page['p95_ms']}", f"{page['max_ms']}")
    console.print(table)
    verdict = "[green]within[/]" if results["ok"] else "[red]over[/]"
    console.print(
        f"worst p95 {results['worst_p95_ms']} ms: {verdict} the {results['target_p95_ms']:.0f} ms "
        f"target ({results['sagas']:,} sagas, {results['dead_letters']:,} dead letters, seeded in "
        f"{results['seeded_in_s']} s)"
    )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"[dim]figures written to {json_out}[/]")
    if not results["ok"]:
        raise typer.Exit(1)


@bench_app.command("soak")
def bench_soak(
    rate: float = typer.Option(50.0, "--rate", min=1, help="orders per second"),
    half_of: Path | None = typer.Option(
        None, "--half-of", help="a bench JSON (var/bench.json): soak at half its max sustained"
    ),
    minutes: float = typer.Option(20.0, "--minutes", min=0.5),
    horizon: float = typer.Option(
        120.0, "--horizon", min=5, help="retention horizon of outbox, inbox and sagas, seconds"
    ),
    sample_every: float = typer.Option(15.0, "--sample-every", min=1),
    json_out: Path = typer.Option(Path("var/bench-soak.json"), "--json"),
) -> None:
    """Steady orders with retention on: every table's rows, database sizes and memory over time."""
    import io

    from orderflow.bench.soak import PRUNED, soak
    from orderflow.bench.stats import machine

    settings = _settings()
    if half_of is not None:
        rate = max(1.0, json.loads(half_of.read_text())["saga"]["max_sustained_per_s"] / 2)
    console.print(f"[dim]soaking at {rate:.0f} orders/s for {minutes:.1f} minutes…[/]")
    results = run(
        soak(
            settings,
            rate=rate,
            seconds=minutes * 60,
            horizon=horizon,
            sample_every=sample_every,
            log=io.StringIO(),
        )
    )
    results["machine"] = machine()
    samples = results["samples"]
    table = Table("t (s)", *(f"{t}" for t in PRUNED), "saga db MiB", "max RSS MiB", title="soak")
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if len(samples) % step != 1 else []):
        rows = {t: sum(r.get(t, 0) for r in s["rows"].values()) for t in PRUNED}
        table.add_row(
            f"{s['at']:.0f}",
            *(str(rows[t]) for t in PRUNED),
            f"{s['db_bytes']['saga'] / 2**20:.1f}",
            f"{max(s['rss_mib'].values()):.0f}",
        )
    console.print(table)
    console.print(
        f"{results['orders']} orders, {results['confirmed']} CONFIRMED; "
        + (
            "[green]flat[/]"
            if not results["problems"]
            else "[red]" + "; ".join(results["problems"]) + "[/]"
        )
    )
    for note in results["notes"]:
        console.print(f"[yellow]{note}[/]")
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"[dim]figures written to {json_out}[/]")
    if results["problems"]:
        raise typer.Exit(1)
