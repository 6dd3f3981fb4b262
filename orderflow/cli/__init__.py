"""The ``orderflow`` command line: a thin layer, commands in modules by concern (``system``,
``orders``, ``sagas``, ``dead_letters``, ``tools``) turning arguments into calls of the operator
modules; errors become sentences (``base.run``)."""

from orderflow.cli import console, dead_letters, orders, sagas, system, tools
from orderflow.cli.base import app

__all__ = ["app", "console", "dead_letters", "orders", "sagas", "system", "tools"]
