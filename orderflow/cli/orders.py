"""Commands on orders: place-order, orders, load, demo, and the catalog of prices."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import typer
from rich.table import Table

from libs.errors import OrderflowError
from libs.settings import Settings
from orderflow.cli.base import _settings, app, console, err, run
from orderflow.cli.sagas import show_saga


def _refuse_unknown_skus(settings: Settings, skus: list[str]) -> None:
    """Say at once when the catalog lacks a SKU. When the catalog cannot be read, order_svc
    answers the order itself (OrderRejected: unknown SKU)."""
    from order_svc.catalog import list_items

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


START_SERVICES = "uv run orderflow up"


async def _say_if_unserved(client: Any, *, fail: bool) -> None:
    """Say at once when no service consumes a queue the order goes through (and stop, when
    ``fail``: waiting could only time out)."""
    idle = await client.unserved()
    if not idle:
        return
    text = (
        f"no service consumes {', '.join(idle)}: start the services with `{START_SERVICES}` "
        "in another terminal (or run `make demo`)"
    )
    if fail:
        err.print(f"[red]{text}[/]", soft_wrap=True)
        raise typer.Exit(1)
    err.print(f"[yellow]{text}; the order waits in the queue until they run[/]", soft_wrap=True)


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
            await _say_if_unserved(client, fail=wait)
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
        show_saga(settings, outcome.order_id)


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
            await _say_if_unserved(client, fail=True)
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
        show_saga(settings, row.order_id)
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
    from order_svc.catalog import list_items

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
    from order_svc.catalog import set_price

    console.print(run(set_price(_settings(), sku, price, name=name)).describe(), highlight=False)


# -- dead letters -----------------------------------------------------------------------------
