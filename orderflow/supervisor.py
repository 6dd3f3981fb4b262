"""Run services as child processes: prefixed logs, readiness, loud restarts, clean stop.

Used by ``orderflow up``, the chaos harness and the end-to-end tests. A child that exits without
being asked to is reported in red with its exit code, and restarted only when ``restart`` is on
(and then said so, with a count): nothing is restarted silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from orderflow.confine import service_environment
from orderflow.system import SYSTEM

# Resolved once, at import: between fork and exec the child must not import anything.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies, however it dies, so no
    service outlives it (children run in their own session, so they get no SIGHUP)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


COLORS = {s.name: s.color for s in SYSTEM.services}


@dataclass
class Child:
    service: str
    replica: int
    role: str = ""  # "" for the service itself, "relay" for a relay-only process
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    expected_exit: bool = False
    restarts: int = 0
    started_at: float = 0.0
    exits: list[int] = field(default_factory=list)
    http_port: int | None = None  # where its /metrics, /livez and /readyz answer
    http_host: str = "127.0.0.1"  # ... and on which address (a wildcard: loopback)

    @property
    def name(self) -> str:
        return f"{self.service}{'-' + self.role if self.role else ''}#{self.replica}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        replicas: Mapping[str, int] | None = None,
        services: tuple[str, ...] = SYSTEM.names,
        restart: bool = True,
        output: IO[str] | None = None,
        color: bool | None = None,
        extra_env: Callable[[Child], Mapping[str, str]] | None = None,
        confine: bool = True,
    ) -> None:
        """``confine``: each service process gets its own credentials only
        (:mod:`orderflow.confine`), not the operator's environment."""
        self._confine = confine
        self._secrets_root: Path | None = None  # made at the first start, removed by stop_all
        self._secret_dirs: dict[str, str] = {}
        self._env = dict(os.environ if env is None else env)
        self._env["PYTHONUNBUFFERED"] = "1"
        self._restart = restart
        self._out = output or sys.stdout
        self._color = self._out.isatty() if color is None else color
        self._extra_env = extra_env
        self.children = [
            Child(service, n + 1)
            for service in services
            for n in range((replicas or {}).get(service, 1))
        ]
        # ORDERFLOW_HTTP_PORT_BASE: child i listens on base + i (stable scrape targets across
        # restarts); else each child takes any free port and says which
        self._port_base = int(self._env.get("ORDERFLOW_HTTP_PORT_BASE") or 0) or None
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    def _say(self, name: str, service: str, line: str) -> None:
        prefix = f"{name:<16}|"
        if self._color:
            prefix = f"\x1b[{COLORS.get(service, '37')}m{prefix}\x1b[0m"
        self._out.write(f"{prefix} {line}\n")
        self._out.flush()

    def _alarm(self, text: str) -> None:
        self._out.write((f"\x1b[1;31m{text}\x1b[0m" if self._color else text) + "\n")
        self._out.flush()

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def of(self, service: str) -> list[Child]:
        """The service's own processes (not its relay-only ones)."""
        return [c for c in self.children if c.service == service and not c.role]

    async def start_all(self, *, timeout: float = 60.0) -> None:
        for child in self.children:
            await self.start(child)
        await self.wait_ready(timeout=timeout)

    async def start(self, child: Child) -> None:
        env = dict(self._env)
        env["ORDERFLOW_HTTP_PORT"] = str(self.port_of(child) or 0)
        env.update(child.env)
        if self._extra_env is not None:
            env.update(self._extra_env(child))
        if self._confine:
            if self._secrets_root is None:
                self._secrets_root = Path(tempfile.mkdtemp(prefix="orderflow-secrets-"))
            # a restarted child gets a fresh copy of its secrets; the previous copy goes
            shutil.rmtree(self._secret_dirs.pop(child.name, ""), ignore_errors=True)
            env = service_environment(env, child.service, secrets_root=self._secrets_root)
            self._secret_dirs[child.name] = env["ORDERFLOW_SECRETS_DIR"]
        child.ready.clear()
        child.http_port = None
        host = env.get("ORDERFLOW_HTTP_HOST") or "127.0.0.1"
        child.http_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        child.expected_exit = False
        child.started_at = time.monotonic()
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            child.service,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._watchers.append(asyncio.create_task(self._watch(child, child.process)))

    async def _watch(self, child: Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line == f"{child.service} ready":
                child.ready.set()
            elif line.startswith(f"{child.service} http ") and line.split()[-1].isdigit():
                child.http_port = int(line.split()[-1])
            self._say(child.name, child.service, line)
        code = await process.wait()
        child.exits.append(code)
        # A newer process may already stand in for this one (restarted after a kill): its exit
        # says nothing about the newer one, and must not start yet another.
        if child.process is not process or child.expected_exit or self._stopping:
            return
        if self._restart:
            child.restarts += 1
            self._alarm(
                f"{child.name} exited with code {code}; restarting it (restart #{child.restarts})"
            )
            await asyncio.sleep(1.0)
            # restart only if nobody else did meanwhile (a scenario's own restart, a heal)
            if not self._stopping and child.process is process:
                await self.start(child)
        else:
            self._alarm(f"{child.name} exited with code {code}; not restarting it")

    def port_of(self, child: Child) -> int | None:
        """The port a child is given (None: any free one, known once it says)."""
        if self._port_base is None:
            return None
        return self._port_base + self.children.index(child)

    async def wait_ready(
        self, *, timeout: float = 60.0, children: list[Child] | None = None
    ) -> None:
        """Until every child (or those given) is alive, has said it is ready, and its
        ``/readyz`` answers 200 (when it serves HTTP)."""
        pending = children or self.children
        deadline = time.monotonic() + timeout
        while True:
            up = [c for c in pending if c.alive and c.ready.is_set()]
            answers = await asyncio.gather(*(readyz(c) for c in up))
            if len(up) == len(pending) and all(status == 200 for status, _ in answers):
                return
            if time.monotonic() > deadline:
                why = {c.name: "not ready" for c in pending if c not in up}
                why |= {c.name: body for c, (s, body) in zip(up, answers, strict=True) if s != 200}
                raise RuntimeError(f"not ready after {timeout:.0f} s: {why}")
            await asyncio.sleep(0.1)

    async def kill(self, child: Child, sig: int = signal.SIGKILL) -> None:
        """Signal a child and wait for it; the supervisor does not restart it."""
        if not child.alive or child.process is None:
            return
        child.expected_exit = True
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(sig)
        await child.process.wait()

    async def restart_child(self, child: Child, *, wait_ready: bool = True) -> None:
        await self.kill(child, signal.SIGKILL)
        await self.start(child)
        if wait_ready:
            await self.wait_ready(children=[child])

    async def stop_all(self, *, grace: float = 15.0) -> None:
        self._stopping = True
        try:
            await self._stop_children(grace=grace)
        finally:
            if self._secrets_root is not None:
                shutil.rmtree(self._secrets_root, ignore_errors=True)

    async def _stop_children(self, *, grace: float) -> None:
        alive = [c for c in self.children if c.alive]
        for child in alive:
            child.expected_exit = True
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace
        for child in alive:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self._alarm(f"{child.name} did not stop within {grace:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(watcher, 5)


async def readyz(child: Child, *, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a child's ``/readyz``; (200, "") when it serves no HTTP, (0, why)
    when it does not answer."""
    if child.http_port is None:
        return 200, ""
    host = f"[{child.http_host}]" if ":" in child.http_host else child.http_host
    return await http_get(f"http://{host}:{child.http_port}/readyz", timeout=timeout)


async def http_get(url: str, *, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, why) when nothing answers."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
