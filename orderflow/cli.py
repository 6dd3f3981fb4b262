"""The ``orderflow`` command line. Commands turn arguments into calls; errors become sentences."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
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
bench_app = typer.Typer(
    help="Benchmarks that print figures (no subcommand: the whole benchmark).",
    invoke_without_command=True,
)
saga_app = typer.Typer(no_args_is_help=True, help="Inspect and steer saga instances.")
app.add_typer(bench_app, name="bench")
app.add_typer(saga_app, name="saga")
console = Console()
err = Console(stderr=True)
PG_HINT = "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn known failures into one clear line and exit code 1."""
    # The CLI reports failures itself; the client libraries' reconnect chatter is noise here.
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return asyncio.run(coro)
    except OrderflowError as exc:
        err.print(f"[bold red]error:[/] {exc}")
    except asyncpg.InvalidCatalogNameError as exc:
        err.print(f"[bold red]error:[/] {exc}; create the databases with `orderflow setup`")
    except asyncpg.UndefinedTableError as exc:
        err.print(f"[bold red]error:[/] {exc}; apply the migrations with `orderflow setup`")
    except asyncpg.PostgresError as exc:
        err.print(f"[bold red]error:[/] PostgreSQL said: {exc}")
    except OSError as exc:
        err.print(
            f"[bold red]error:[/] cannot reach PostgreSQL ({exc}); {PG_HINT}, "
            "or set ORDERFLOW_*_DSN"
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(1)


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError, with the variable named
        err.print(f"[bold red]error:[/] bad ORDERFLOW_* setting: {exc}")
        raise typer.Exit(2) from None


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
) -> None:
    """Run all four services as supervised child processes until Ctrl-C."""
    from orderflow.supervisor import Supervisor

    counts = _replicas(replicas)

    async def main() -> None:
        supervisor = Supervisor(replicas=counts, restart=not no_restart)
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


def _refuse_unknown_skus(settings: Settings, skus: list[str]) -> None:
    """Say at once when the catalog lacks a SKU. When the catalog cannot be read, order_svc
    answers the order itself (OrderRejected: unknown SKU)."""
    from orderflow.catalog import list_items

    try:  # not run(): a catalog out of reach is no error here
        known = {item.sku for item in asyncio.run(list_items(settings))}
    except (OSError, asyncpg.PostgresError, OrderflowError):
        return
    unknown = [sku for sku in skus if sku not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown SKU {', '.join(unknown)}: the catalog has {', '.join(sorted(known))} "
            "(`orderflow catalog list`)"
        )


def parse_item(text: str) -> tuple[str, int, Decimal | None]:
    """``SKU:QTY[:PRICE]``; without a price the order is charged the catalog's (order_svc's)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise typer.BadParameter(
            f"{text!r}: write items as SKU:QTY or SKU:QTY:PRICE, e.g. WIDGET:2:9.99"
        )
    sku = parts[0].upper()
    if not re.fullmatch(r"[A-Z0-9][A-Z0-9_-]{0,31}", sku):
        raise typer.BadParameter(f"{text!r}: a SKU is letters, digits, - and _ (at most 32)")
    if not parts[1].isdigit() or not 0 < int(parts[1]) <= 10_000:
        raise typer.BadParameter(f"{text!r}: the quantity must be a whole number from 1 to 10000")
    if len(parts) == 3:
        try:
            price = Decimal(parts[2])
        except InvalidOperation:
            raise typer.BadParameter(f"{text!r}: {parts[2]!r} is not a price like 9.99") from None
        if not price.is_finite() or price < 0 or price.as_tuple().exponent < -2:  # type: ignore[operator]
            raise typer.BadParameter(f"{text!r}: a price is zero or more, with at most 2 decimals")
        return sku, int(parts[1]), price
    return sku, int(parts[1]), None


@app.command("place-order")
def place_order(
    customer: str = typer.Option(..., "--customer", help="customer id, e.g. alice"),
    item: list[str] = typer.Option(..., "--item", help="SKU:QTY[:PRICE], repeatable"),
    order_id: str | None = typer.Option(
        None, "--order-id", help="choose the id (makes retries idempotent)"
    ),
    wait: bool = typer.Option(
        False, "--wait", help="follow the order to its end and print its timeline"
    ),
    timeout: float = typer.Option(60.0, help="seconds to wait with --wait"),
) -> None:
    """Publish a PlaceOrder command and print the order id."""
    import uuid

    items = [parse_item(i) for i in item]
    if order_id is not None:
        try:
            order_id = str(uuid.UUID(order_id))
        except ValueError:
            raise typer.BadParameter(f"--order-id {order_id!r} is not a UUID") from None
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,64}", customer):
        raise typer.BadParameter(
            f"--customer {customer!r}: letters, digits and _.:@- only, at most 64"
        )
    settings = _settings()
    _refuse_unknown_skus(settings, [sku for sku, _, _ in items])

    async def main() -> Any:
        from libs.observability.tracing import setup_tracing, shutdown_tracing
        from orderflow.client import OrderClient

        setup_tracing("orderflow-cli")
        client = await OrderClient.open(settings.amqp_url)
        try:
            outcome = await client.place(customer_id=customer, items=items, order_id=order_id)
            console.print(
                f"order [bold]{outcome.order_id}[/] placed"
                + (f" (trace {outcome.trace_id})" if outcome.trace_id else "")
            )
            if wait and not await client.wait([outcome.order_id], timeout=timeout):
                err.print(
                    f"[yellow]order {outcome.order_id} is still PENDING after {timeout:.0f} s[/]"
                )
            return outcome
        finally:
            await client.close()
            shutdown_tracing()

    outcome = run(main())
    if wait:
        status_style = {"CONFIRMED": "green", "REJECTED": "red"}.get(outcome.status, "yellow")
        console.print(
            f"[bold {status_style}]{outcome.status}[/]"
            + (f": {outcome.reason}" if outcome.reason else "")
        )
        _show_saga(settings, outcome.order_id)


@app.command()
def orders(
    status: str | None = typer.Option(None, "--status", help="PENDING, CONFIRMED or REJECTED"),
    limit: int = typer.Option(20, "--limit", min=1, max=10_000),
) -> None:
    """List orders, newest first."""
    from orderflow.inspect import list_orders

    if status is not None and status.upper() not in ("PENDING", "CONFIRMED", "REJECTED"):
        raise typer.BadParameter(f"--status {status!r}: PENDING, CONFIRMED or REJECTED")
    rows = run(list_orders(_settings(), status=status.upper() if status else None, limit=limit))
    table = Table("order", "customer", "status", "total", "age", "reason")
    for r in rows:
        table.add_row(
            r["id"],
            r["customer_id"],
            r["status"],
            f"{r['total']} {r['currency']}",
            f"{float(r['age']):.0f}s",
            r["reason"] or "",
        )
    console.print(table)


@app.command()
def load(
    orders: int = typer.Option(100, "--orders", min=1, max=1_000_000),
    rate: float = typer.Option(20.0, "--rate", min=0.1, help="orders per second"),
    mix: str = typer.Option("ok=80,declined=10,out-of-stock=10", "--mix"),
    seed: int = typer.Option(1, "--seed"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds to wait for the last order"),
) -> None:
    """Publish a reproducible mix of orders, wait for every one, print a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orderflow.client import OrderClient
    from orderflow.load import BadMix, parse_mix, plan, run_load

    try:
        weights = parse_mix(mix)
    except BadMix as exc:
        raise typer.BadParameter(str(exc)) from None
    planned = plan(orders, weights, seed)
    settings = _settings()

    async def main() -> Any:
        client = await OrderClient.open(settings.amqp_url)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                placed = progress.add_task("placed", total=orders)
                done = progress.add_task("finished", total=orders)
                return await run_load(
                    client,
                    planned,
                    rate=rate,
                    timeout=timeout,
                    on_placed=lambda n: progress.update(placed, completed=n),
                    on_done=lambda n: progress.update(done, completed=n),
                )
        finally:
            await client.close()

    result = run(main())
    table = Table(
        "kind", "planned", "CONFIRMED", "REJECTED", "PENDING", title=f"{orders} orders, seed {seed}"
    )
    for kind in ("ok", "declined", "out-of-stock"):
        if result.planned[kind]:
            table.add_row(
                kind,
                str(result.planned[kind]),
                *(str(result.outcomes[(kind, s)]) for s in ("CONFIRMED", "REJECTED", "PENDING")),
            )
    console.print(table)
    console.print(
        f"placed in {result.placing_seconds:.1f} s, all ended after {result.total_seconds:.1f} s; "
        f"latency place→end p50 {result.latency(50):.0f} ms, p95 {result.latency(95):.0f} ms, "
        f"p99 {result.latency(99):.0f} ms"
    )
    if result.pending or result.unexpected:
        console.print(
            f"[bold red]failures:[/] {len(result.pending)} still pending, "
            f"{len(result.unexpected)} ended unexpectedly (e.g. {(result.pending + result.unexpected)[:3]})"
        )
        raise typer.Exit(1)


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


@app.command()
def demo(
    orders: int = typer.Option(20, "--orders", min=3, max=500),
    verbose: bool = typer.Option(False, "--verbose", help="show the services' logs"),
) -> None:
    """Set up, start the services, place a mix of orders, show how each ended, stop."""
    from orderflow.demo import run_demo

    settings = _settings()
    console.print(
        "[bold]orderflow demo[/]: setting up, starting the four services, placing "
        f"{orders} orders (confirmed, declined, out of stock)…"
    )
    result = run(run_demo(settings, orders=orders, verbose=verbose))
    table = Table("order", "kind", "outcome", "reason", "ms", title="how each order ended")
    for row in result.rows:
        style = {"CONFIRMED": "green", "REJECTED": "red"}.get(row.status, "yellow")
        table.add_row(
            row.order_id,
            row.kind,
            f"[{style}]{row.status}[/]",
            row.reason,
            f"{row.latency_ms:.0f}" if row.latency_ms is not None else "",
        )
    console.print(table)
    shown: set[str] = set()
    for row in result.rows:
        if row.kind in shown:
            continue
        shown.add(row.kind)
        console.rule(f"{row.kind}: saga timeline of order {row.order_id}")
        _show_saga(settings, row.order_id)
    load = result.load
    counts = ", ".join(f"{k} → {s}: {n}" for (k, s), n in sorted(load.outcomes.items()))
    console.print(f"[bold]{counts}[/]")
    if load.pending or load.unexpected:
        console.print("[bold red]some orders did not end as expected[/]")
        raise typer.Exit(1)
    console.print(
        "Next: `orderflow up` in one terminal, then `orderflow place-order --customer alice "
        "--item WIDGET:2 --wait` in another."
    )


# -- catalog ----------------------------------------------------------------------------------

catalog_app = typer.Typer(no_args_is_help=True, help="The prices orders are charged at.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("list")
def catalog_list() -> None:
    """List the catalog: every SKU with the unit price orders are charged."""
    from orderflow.catalog import list_items

    items = run(list_items(_settings()))
    table = Table("sku", "name", "price", "updated")
    for item in items:
        table.add_row(
            item.sku, item.name, f"{item.price} USD", item.updated_at.strftime("%Y-%m-%d %H:%M:%S")
        )
    console.print(table)
    console.print(f"{len(items)} SKU(s)")


@catalog_app.command("set-price")
def catalog_set_price(
    sku: str = typer.Argument(..., help="e.g. WIDGET"),
    price: str = typer.Argument(..., help="the unit price, e.g. 9.99"),
    name: str | None = typer.Option(None, "--name", help="add the SKU (or rename it)"),
) -> None:
    """Set a SKU's price for orders placed from now on; --name adds a new SKU."""
    from orderflow.catalog import set_price

    console.print(run(set_price(_settings(), sku, price, name=name)).describe(), highlight=False)


# -- dead letters -----------------------------------------------------------------------------

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters of the queues and of the relays.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    queue: str | None = typer.Option(None, "--queue", help="e.g. order_svc.commands"),
) -> None:
    """List dead letters with why they died."""
    from orderflow.dlq import list_letters

    letters = run(list_letters(_settings(), queue=queue))
    table = Table("id", "where", "type", "error", "attempts")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.where,
            letter.type,
            f"{letter.error_class}: {letter.error}"[:120],
            str(letter.attempts),
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq_app.command("show")
def dlq_show(letter_id: str) -> None:
    """Show one dead letter: headers and body."""
    from orderflow.dlq import list_letters

    letters = [x for x in run(list_letters(_settings())) if x.id == letter_id]
    if not letters:
        err.print(f"[bold red]error:[/] no dead letter {letter_id}; see `orderflow dlq list`")
        raise typer.Exit(1)
    letter = letters[0]
    console.print(f"[bold]{letter.id}[/] in {letter.where}: {letter.type}")
    console.print(f"error: {letter.error_class}: {letter.error}  (attempts {letter.attempts})")
    for key, value in sorted(letter.headers.items()):
        console.print(f"  {key}: {value}", markup=False)
    console.print(letter.body.decode(errors="replace"), markup=False, highlight=False)


@dlq_app.command("replay")
def dlq_replay(
    letter_id: str | None = typer.Argument(None),
    all_: bool = typer.Option(False, "--all"),
    queue: str | None = typer.Option(None, "--queue"),
) -> None:
    """Send dead letters back where they came from (processed once, thanks to the inbox)."""
    from orderflow.dlq import replay

    if (letter_id is None) == (not all_):
        raise typer.BadParameter("give one dead letter id, or --all")
    done = run(replay(_settings(), letter_id=letter_id, queue=queue))
    for refused_id, why in done.refused:
        err.print(f"[bold red]not replayed[/] {refused_id}: {why}", highlight=False)
    if letter_id is not None and done.count == 0:
        if not done.refused:
            err.print(f"[bold red]error:[/] no dead letter {letter_id} (already replayed?)")
        raise typer.Exit(1)
    console.print(f"replayed {done.count} dead letter(s)")
    if done.refused:
        raise typer.Exit(1)


@dlq_app.command("purge")
def dlq_purge(
    queue: str | None = typer.Option(None, "--queue"),
    yes: bool = typer.Option(False, "--yes", help="do not ask"),
) -> None:
    """Delete dead letters for good."""
    from orderflow.dlq import purge

    if not yes and not typer.confirm("Delete the dead letters for good?"):
        raise typer.Exit(1)
    console.print(f"purged {run(purge(_settings(), queue=queue))} dead letter(s)")


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


def _show_saga(settings: Settings, order_id: str) -> None:
    from orderflow.inspect import saga_view

    view = run(saga_view(settings, order_id))
    if view is None:
        err.print(f"[bold red]error:[/] no saga for order {order_id} (yet?)")
        raise typer.Exit(1)
    inst = view.instance
    console.print(
        f"saga [bold]{inst.id}[/]  state [bold]{inst.status}[/]"
        + (f"  step {inst.step} (attempt {inst.attempt})" if inst.step else "")
    )
    if view.trace_id:
        console.print(f"trace {view.trace_id}  {view.jaeger_url}")
    table = Table("time", "+ms", "event", "step", "state", "detail")
    previous = None
    for row in view.log:
        delta = "" if previous is None else f"{(row.at - previous).total_seconds() * 1000:.1f}"
        previous = row.at
        detail = ", ".join(f"{k}={v}" for k, v in row.detail.items() if k != "data")
        table.add_row(
            row.at.strftime("%H:%M:%S.%f")[:-3],
            delta,
            row.event,
            row.step or "",
            row.status,
            detail,
        )
    console.print(table)


@saga_app.command("show")
def saga_show(order_id: str) -> None:
    """The saga's timeline: transitions, commands, replies, retries, compensations, trace."""
    _show_saga(_settings(), order_id)


@saga_app.command("list")
def saga_list(
    state: str | None = typer.Option(None, "--state"),
    stuck: bool = typer.Option(False, "--stuck", help="only those past their deadline"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
) -> None:
    """List saga instances, newest first."""
    from orderflow.inspect import list_sagas

    rows = run(
        list_sagas(
            _settings(),
            state=state.upper() if state else None,
            stuck=stuck,
            now=datetime.now(UTC),
            limit=limit,
        )
    )
    table = Table("order", "state", "step", "attempt", "deadline", "updated")
    for r in rows:
        table.add_row(
            r.id,
            r.status,
            r.step or "",
            str(r.attempt),
            r.deadline_at.strftime("%H:%M:%S") if r.deadline_at else "",
            r.updated_at.strftime("%H:%M:%S"),
        )
    console.print(table)
    console.print(f"{len(rows)} instance(s)")


def _print_transition(t: Any) -> None:
    for entry in t.log:
        console.print(f"{entry.event} {entry.step or ''} {entry.detail}")
    if not t.accepted:
        raise typer.Exit(1)
    console.print(f"saga is now [bold]{t.state.status}[/]; {len(t.commands)} command(s) sent")


@saga_app.command("retry")
def saga_retry(order_id: str) -> None:
    """Re-send the command(s) the saga waits on, with the same ids."""
    from orderflow.operate import retry

    _print_transition(run(retry(_settings(), order_id)))


@saga_app.command("compensate")
def saga_compensate(
    order_id: str, reason: str = typer.Option("compensation forced by an operator")
) -> None:
    """Stop the saga's forward path and compensate what it did."""
    from orderflow.operate import compensate

    _print_transition(run(compensate(_settings(), order_id, reason)))


@saga_app.command("diagram")
def saga_diagram() -> None:
    """Print the order saga as a Mermaid state diagram."""
    from libs.saga.mermaid import mermaid
    from saga.bootstrap import coordinator

    print(mermaid(coordinator(_settings()).definition), end="")


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


if __name__ == "__main__":
    sys.exit(app())
