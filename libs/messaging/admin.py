"""Broker administration that AMQP cannot do: virtual hosts and permissions.

Uses ``rabbitmqctl`` when it is on PATH (a local broker), otherwise the management HTTP API
(``ORDERFLOW_RABBITMQ_API``, default ``http://127.0.0.1:15672``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from libs.errors import ConfigurationError, InfrastructureUnavailable, OrderflowError


async def _rabbitmqctl(*args: str, stdin: str | None = None, timeout: float | None = None) -> str:
    """Run rabbitmqctl. Secrets go through ``stdin``, never the command line: other users of the
    machine can see a command line, and rabbitmqctl echoes its arguments in its own errors."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(None if stdin is None else stdin.encode() + b"\n"), timeout
        )
    except TimeoutError:
        proc.kill()
        raise InfrastructureUnavailable(f"rabbitmqctl {args[0]} took over {timeout} s") from None
    if proc.returncode != 0:
        raise InfrastructureUnavailable(
            f"rabbitmqctl {args[0]} failed: {(err or out).decode().strip()[:500]}"
        )
    return out.decode()


def _api(
    method: str, path: str, body: dict[str, Any] | None = None, *, base: str | None = None
) -> Any:
    """One management API call; the parsed JSON answer (None when there is none)."""
    base = base or os.environ.get("ORDERFLOW_RABBITMQ_API", "http://127.0.0.1:15672")
    user = os.environ.get("ORDERFLOW_RABBITMQ_ADMIN_USER", "guest")
    password = os.environ.get("ORDERFLOW_RABBITMQ_ADMIN_PASSWORD", "guest")
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "content-type": "application/json",
            "authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        if not (method == "DELETE" and exc.code == 404):
            raise ConfigurationError(f"management API {method} {path}: HTTP {exc.code}") from None
        return None
    except OSError as exc:
        raise InfrastructureUnavailable(
            f"neither rabbitmqctl nor the management API at {base} is available: {exc}"
        ) from None
    return json.loads(answer) if answer else None


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


async def ensure_vhost(vhost: str, *, user: str = "guest") -> None:
    """Create the vhost if needed and give ``user`` full rights on it."""
    if shutil.which("rabbitmqctl"):
        existing = (await _rabbitmqctl("list_vhosts", "name")).split()
        if vhost not in existing:
            await _rabbitmqctl("add_vhost", vhost)
        await _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        return
    await asyncio.to_thread(_api, "PUT", f"/api/vhosts/{_q(vhost)}", {})
    await asyncio.to_thread(
        _api,
        "PUT",
        f"/api/permissions/{_q(vhost)}/{_q(user)}",
        {"configure": ".*", "write": ".*", "read": ".*"},
    )


async def ensure_user(
    user: str, password: str, *, vhost: str, configure: str, write: str, read: str
) -> None:
    """Create or update a broker user with exactly these permissions on ``vhost``."""
    if shutil.which("rabbitmqctl"):
        existing = (await _rabbitmqctl("list_users")).split()
        if user in existing:
            await _rabbitmqctl("change_password", user, stdin=password)
        else:
            await _rabbitmqctl("add_user", user, stdin=password)
        await _rabbitmqctl("set_permissions", "-p", vhost, user, configure, write, read)
        return
    await asyncio.to_thread(
        _api, "PUT", f"/api/users/{_q(user)}", {"password": password, "tags": ""}
    )
    await asyncio.to_thread(
        _api,
        "PUT",
        f"/api/permissions/{_q(vhost)}/{_q(user)}",
        {"configure": configure, "write": write, "read": read},
    )


async def delete_user(user: str) -> None:
    if shutil.which("rabbitmqctl"):
        if user in (await _rabbitmqctl("list_users")).split():
            await _rabbitmqctl("delete_user", user)
        return
    await asyncio.to_thread(_api, "DELETE", f"/api/users/{_q(user)}")


async def delete_vhost(vhost: str) -> None:
    if shutil.which("rabbitmqctl"):
        existing = (await _rabbitmqctl("list_vhosts", "name")).split()
        if vhost in existing:
            await _rabbitmqctl("delete_vhost", vhost)
        return
    await asyncio.to_thread(_api, "DELETE", f"/api/vhosts/{_q(vhost)}")


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (``/`` when it names none)."""
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def with_vhost(url: str, vhost: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(path="/" + _q(vhost)).geturl()


async def unacked_counts(vhost: str, *, host: str = "127.0.0.1") -> dict[str, int] | None:
    """Messages delivered and not yet acked, per queue of ``vhost``; None when unknown.

    AMQP tells only what is ready; this asks ``rabbitmqctl`` (a local broker) or the management
    API. Both report the broker's statistics, refreshed every ``collect_statistics_interval``
    (5 s by default): a count taken within seconds of the last delivery may be stale."""
    try:
        if shutil.which("rabbitmqctl") and host in ("127.0.0.1", "localhost", "::1"):
            columns = ("name", "messages_unacknowledged")
            out = await _rabbitmqctl(
                "list_queues", "-p", vhost, "--formatter", "json", *columns, timeout=15
            )
            queues = json.loads(out)
        else:
            base = os.environ.get("ORDERFLOW_RABBITMQ_API", f"http://{host}:15672")
            path = f"/api/queues/{_q(vhost)}?columns=name,messages_unacknowledged"
            queues = await asyncio.to_thread(_api, "GET", path, base=base)
        return {q["name"]: int(q.get("messages_unacknowledged") or 0) for q in queues} or None
    except (OrderflowError, ValueError, KeyError, TypeError):
        return None
