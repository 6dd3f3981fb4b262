"""`orderflow console`: a web console for orders, sagas and dead letters (see docs/console.md)."""

from orderflow.console.app import create_app, serve
from orderflow.console.settings import ConsoleSettings

__all__ = ["ConsoleSettings", "create_app", "serve"]
