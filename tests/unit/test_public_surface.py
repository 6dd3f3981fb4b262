"""The toolkit states its public names, and the services import only those.

Every package of ``libs`` and every top-level module says what it offers in ``__all__``; a
service (and the extension proof, which stands for a team's own service) imports from those and
nothing deeper, so the toolkit's insides can change without breaking them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import libs

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("order_svc", "payment_svc", "inventory_svc", "saga")
EXTENSION_PROOF = ROOT / "tests" / "e2e" / "test_extending.py"


def public_modules() -> dict[str, list[str] | None]:
    """Module name -> its public names; None for ``libs.testing``'s modules (all of a test
    helper module is for tests)."""
    found: dict[str, list[str] | None] = {}
    for info in pkgutil.iter_modules(libs.__path__, "libs."):
        module = importlib.import_module(info.name)
        found[info.name] = list(module.__all__)
    testing = importlib.import_module("libs.testing")
    for name in testing.__all__:
        found[f"libs.testing.{name}"] = None
    return found


def violations(source: str, filename: str, public: dict[str, list[str] | None]) -> list[str]:
    """Imports of ``libs`` in ``source`` that reach past a public surface."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            problems += [
                f"{filename}:{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("libs.") and a.name not in public
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("libs"):
            module = node.module or ""
            if module not in public:
                problems.append(f"{filename}:{node.lineno}: from {module} (not a public module)")
                continue
            names = public[module]
            if names is None:
                continue
            problems += [
                f"{filename}:{node.lineno}: {a.name} is not in {module}.__all__"
                for a in node.names
                if a.name not in names
            ]
    return problems


def test_every_toolkit_package_and_module_states_its_public_names() -> None:
    public = public_modules()
    assert {"libs.service", "libs.outbox", "libs.saga", "libs.errors"} <= set(public)
    for name, names in public.items():
        if names is None:
            continue
        module = importlib.import_module(name)
        missing = [
            n
            for n in names
            if not hasattr(module, n) and importlib.util.find_spec(f"{name}.{n}") is None
        ]
        assert not missing, f"{name}.__all__ names what it does not have: {missing}"


def test_the_services_and_the_extension_import_only_public_names() -> None:
    public = public_modules()
    files = [p for s in SERVICES for p in (ROOT / s).rglob("*.py")] + [EXTENSION_PROOF]
    problems = []
    for path in files:
        problems += violations(path.read_text(), str(path.relative_to(ROOT)), public)
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "from libs.service.runner import MessageRunner",  # a module inside a package
        "from libs.service import _Work",  # a private name
        "import libs.outbox.relay",
        "from libs.saga import engine",  # a module the package does not offer
    ],
)
def test_the_check_sees_an_import_past_the_surface(source: str) -> None:
    assert violations(source, "x.py", public_modules()) != []


def test_the_check_accepts_public_names() -> None:
    source = "from libs.service import HandlerContext\nfrom libs.testing.infra import unique_name"
    assert violations(source, "x.py", public_modules()) == []
