"""Commands on saga instances: saga show, list, retry, compensate, diagram."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from libs.settings import Settings
from orderflow.cli.base import _settings, app, console, err, run

saga_app = typer.Typer(no_args_is_help=True, help="Inspect and steer saga instances.")
app.add_typer(saga_app, name="saga")


def show_saga(settings: Settings, order_id: str) -> None:
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
    show_saga(_settings(), order_id)


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


def _operator() -> str:
    """Who runs the command, as the saga log records it: the login of the shell."""
    return getpass.getuser()


@saga_app.command("retry")
def saga_retry(
    order_id: str, reason: str = typer.Option("retry asked by an operator", "--reason")
) -> None:
    """Re-send the command(s) the saga waits on, with the same ids."""
    from orderflow.operate import retry

    _print_transition(run(retry(_settings(), order_id, operator=_operator(), reason=reason)))


@saga_app.command("compensate")
def saga_compensate(
    order_id: str, reason: str = typer.Option("compensation forced by an operator", "--reason")
) -> None:
    """Stop the saga's forward path and compensate what it did."""
    from orderflow.operate import compensate

    _print_transition(run(compensate(_settings(), order_id, operator=_operator(), reason=reason)))


@saga_app.command("diagram")
def saga_diagram() -> None:
    """Print the order saga as a Mermaid state diagram."""
    from libs.saga.mermaid import mermaid
    from saga.bootstrap import coordinator

    print(mermaid(coordinator(_settings()).definition), end="")
