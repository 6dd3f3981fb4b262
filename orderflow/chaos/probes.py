"""What a chaos run asks the broker, the database and the shell, and how it reads the answers
(see :mod:`orderflow.chaos.verify` for what each answer proves)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class CommandFailed(RuntimeError):
    """A command of the harness failed: its exit code and what it said."""


async def cmd(*args: str, timeout: float = 120.0) -> str:
    """Run a command; its output (stdout and stderr), or CommandFailed with that output."""
    shown = shlex.join(args)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise CommandFailed(f"`{shown}` could not start: {exc}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise CommandFailed(f"`{shown}` did not finish within {timeout:.0f} s") from None
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise CommandFailed(
            f"`{shown}` exited with code {proc.returncode}: {text[-1000:] or '(no output)'}"
        )
    return text


# -- the ledger -----------------------------------------------------------------------------


BROKER_PROBE = (
    'lists:flatten(io_lib:format("~s ~p ~p", [os:getpid(), erlang:whereis(rabbit_sup), '
    "erlang:system_time(second) - element(1, erlang:statistics(wall_clock)) div 1000]))."
)


@dataclass(frozen=True)
class BrokerInstance:
    os_pid: int
    app: str | None  # None: the rabbit application is not running
    vm_started: int

    def __str__(self) -> str:
        return f"OS pid {self.os_pid}, application {self.app or 'stopped'}"


def parse_broker_instance(text: str) -> BrokerInstance:
    parts = text.strip().strip('"').split()
    if len(parts) != 3 or not parts[0].isdigit():
        raise CommandFailed(f"unexpected answer to the broker probe: {text[:300]!r}")
    os_pid, app, vm_started = parts
    return BrokerInstance(int(os_pid), None if app == "undefined" else app, int(vm_started))


async def broker_instance() -> BrokerInstance:
    return parse_broker_instance(await cmd("rabbitmqctl", "-q", "eval", BROKER_PROBE))


def broker_restart_problem(before: BrokerInstance, after: BrokerInstance) -> str | None:
    """None when the broker restarted and is back; otherwise what is wrong."""
    if before.app is None:
        return f"the broker was not running before the restart ({before})"
    if after.app is None:
        return f"the broker is not back: its application is not running ({after})"
    if (after.os_pid, after.app) == (before.os_pid, before.app):
        return f"the broker did not restart: the same instance before and after ({after})"
    return None


async def broker_connections(vhost: str) -> list[dict[str, Any]]:
    """The connections of a vhost: pid, user, peer_port, name (list_connections lists every
    vhost's, whatever ``-p`` says)."""
    text = await cmd(
        "rabbitmqctl",
        "-q",
        "list_connections",
        "vhost",
        "pid",
        "user",
        "peer_port",
        "name",
        "--formatter",
        "json",
    )
    rows = json.loads(text or "[]")
    return [dict(row) for row in rows if row.get("vhost") == vhost]


def connections_dropped_problem(before: set[str], after: set[str]) -> str | None:
    """None when every connection listed before the drop is gone after it."""
    if not before:
        return "there was no connection to drop"
    survivors = before & after
    if survivors:
        return f"{len(survivors)} of {len(before)} connections survived the drop"
    return None


# -- the database ---------------------------------------------------------------------------


async def postmaster_started(admin_dsn: str, *, timeout: float = 60.0) -> datetime:
    """``pg_postmaster_start_time()``, waiting up to ``timeout`` s for the server to answer."""
    import asyncpg

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(admin_dsn, timeout=5)
            try:
                started: datetime = await conn.fetchval("SELECT pg_postmaster_start_time()")
                return started
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if time.monotonic() > deadline:
                raise CommandFailed(
                    f"the database did not answer within {timeout:.0f} s: {exc}"
                ) from None
            await asyncio.sleep(0.2)


def database_restart_problem(before: datetime, after: datetime) -> str | None:
    """None when the postmaster started again (after the start time seen before)."""
    if after <= before:
        return f"pg_postmaster_start_time() did not change ({after.isoformat()})"
    return None


async def database_clients(admin_dsn: str, databases: list[str]) -> list[dict[str, Any]]:
    """The backends connected to ``databases``: datname, usename, client_port (-1: unix)."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT datname, usename, coalesce(client_port, -1) AS client_port"
            " FROM pg_stat_activity WHERE datname = ANY($1::text[])",
            databases,
        )
        return [dict(r) for r in rows]
    finally:
        await conn.close()


# -- processes ------------------------------------------------------------------------------


async def queue_consumers(vhost: str) -> dict[str, set[str]]:
    """Per queue of the vhost, the broker connections (their Erlang pids) consuming from it."""
    consumers = json.loads(
        await cmd(
            "rabbitmqctl",
            "-q",
            "list_consumers",
            "-p",
            vhost,
            "queue_name",
            "channel_pid",
            "--formatter",
            "json",
        )
        or "[]"
    )
    channels = json.loads(
        await cmd(
            "rabbitmqctl",
            "-q",
            "list_channels",
            "pid",
            "connection",
            "vhost",
            "--formatter",
            "json",
        )
        or "[]"
    )
    connection_of = {c["pid"]: c["connection"] for c in channels if c.get("vhost") == vhost}
    out: dict[str, set[str]] = {}
    for row in consumers:
        connection = connection_of.get(row["channel_pid"])
        if connection is not None:
            out.setdefault(row["queue_name"], set()).add(connection)
    return out


def replica_problems(consumers: Mapping[str, set[str]], expected: Mapping[str, int]) -> list[str]:
    """Each queue of ``expected`` must be consumed on at least that many broker connections."""
    problems = []
    for queue, replicas in sorted(expected.items()):
        seen = len(consumers.get(queue, ()))
        if seen < replicas:
            problems.append(
                f"queue {queue} has consumers on {seen} connection(s), expected {replicas} replicas"
            )
    return problems
