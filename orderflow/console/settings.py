"""The console's settings, ``ORDERFLOW_CONSOLE_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConsoleSettings"]


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_CONSOLE_", extra="ignore")

    host: str = "127.0.0.1"
    """Where it listens: only this machine by default."""
    port: int = Field(default=8088, ge=0, le=65535)
    """0: any free port, written to ``port_file``."""
    port_file: Path | None = None
    refresh: float = Field(default=2.0, ge=0.5, le=300)
    """Seconds between two refreshes of a page's live parts (overview, stuck sagas)."""
    stuck_after: float = Field(default=60.0, gt=0)
    """A saga in flight for longer than this is listed as stuck, deadline or not."""
    hosts: list[str] = ["127.0.0.1", "localhost", "::1"]
    """Host names the console answers to (the ``Host`` header; any other gets 421): a page of
    another site whose name re-resolves to this address (DNS rebinding) is refused. Add the name
    people reach it by when it listens elsewhere."""
    anonymous_read: bool = True
    """Pages may be read without logging in (actions never can)."""
    session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    page_size: int = Field(default=50, ge=1, le=500)
