"""The ``orderflow`` app, and what every command shares: running a coroutine with failures as sentences, the settings, the consoles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import typer
from rich.console import Console

from libs.errors import OrderflowError
from libs.settings import Settings

T = TypeVar("T")
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="orderflow: orders over an outbox, a broker and a saga.",
)
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
