"""`orderflow console`: serve the web console; `orderflow console add-user`: give someone a login."""

from __future__ import annotations

import contextlib
import secrets
import sys

import typer

from orderflow.cli.base import _settings, app, console, err, run

console_app = typer.Typer(
    invoke_without_command=True,
    help="The web console: overview, orders, sagas, dead letters (docs/console.md).",
)
app.add_typer(console_app, name="console")


@console_app.callback()
def console_serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="default 127.0.0.1 (this machine)"),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="default 8088"),
) -> None:
    """Serve the console until Ctrl-C (read-only without a login; actions need an operator)."""
    if ctx.invoked_subcommand is not None:
        return
    from orderflow.console import ConsoleSettings, serve
    from orderflow.console.access import load_users

    settings = _settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    config = ConsoleSettings(**overrides)  # type: ignore[arg-type]
    users = load_users(settings.secrets_dir)
    if not any(u.may_act for u in users.values()):
        err.print(
            "[yellow]note:[/] no operator can log in yet; add one with "
            "`orderflow console add-user NAME --role operator`"
        )

    def ready(bound: int) -> None:
        console.print(f"console on http://{config.host}:{bound}/  (Ctrl-C stops it)")

    with contextlib.suppress(KeyboardInterrupt):
        run(serve(settings, config, ready=ready))


@console_app.command("add-user")
def add_user_command(
    name: str,
    role: str = typer.Option("operator", "--role", help="operator (may act) or viewer (reads)"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="read the password from standard input"
    ),
) -> None:
    """Add a console user (or replace its role and password). Without --password-stdin a
    password is generated and printed once."""
    from orderflow.console.access import add_user

    settings = _settings()
    generated = not password_stdin
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(18)

    async def write() -> None:
        add_user(settings.secrets_dir, name, role, password)

    run(write())
    console.print(f"{name} may log in as {role} (users in {settings.secrets_dir}/console_users)")
    if generated:
        console.print(f"password, shown once: {password}", highlight=False)
