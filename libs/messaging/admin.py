"""Broker administration that AMQP cannot do: virtual hosts and permissions.

Uses ``rabbitmqctl`` when it is on PATH (a local broker), otherwise the management HTTP API
(a :class:`ManagementApi`; ``Settings.management_api()`` gives the configured one).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.errors import ConfigurationError, InfrastructureUnavailable, OrderflowError
from libs.secrets import url_list


async def _rabbitmqctl(
    *args: str, node: str | None, stdin: str | None = None, timeout: float | None = None
) -> str:
    """Run rabbitmqctl (against ``node``, or the local default node). Secrets go through
    ``stdin``, never the command line: other users of the machine can see a command line, and
    rabbitmqctl echoes its arguments in its own errors."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *(("-n", node) if node else ()),
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


@dataclass(frozen=True)
class ManagementApi:
    """Where the management HTTP API is and whom to log in as (used without ``rabbitmqctl``)."""

    url: str = "http://127.0.0.1:15672"
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    node: str | None = None
    """The node ``rabbitmqctl`` administers (``-n``): a cluster's node; None: the local default."""


LOCAL_API = ManagementApi()


def _api(
    method: str, path: str, body: dict[str, Any] | None = None, *, api: ManagementApi = LOCAL_API
) -> Any:
    """One management API call; the parsed JSON answer (None when there is none)."""
    base, user, password = api.url.rstrip("/"), api.user, api.password
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


@dataclass(frozen=True)
class Grant:
    """A broker user, its password and its permissions on one vhost."""

    user: str
    password: str = field(repr=False)
    configure: str
    write: str
    read: str


def _password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


async def ensure_access(
    vhost: str,
    grants: Sequence[Grant] = (),
    *,
    operator: str | None = None,
    create_vhost: bool = True,
    vhost_is_new: bool = False,
    api: ManagementApi = LOCAL_API,
) -> None:
    """Create ``vhost`` if needed (``create_vhost``), give ``operator`` (if any) full rights on it, and create or
    update each grant's user with exactly its password and permissions there.

    With rabbitmqctl this is one ``import_definitions`` run, fed on stdin with password hashes
    (never a password on a command line): each rabbitmqctl run starts an Erlang VM, about half a
    second of CPU, so one run instead of three per user. An existing vhost is left out of the
    definitions (importing it would reset its description and tags) unless the caller knows it
    is new (``vhost_is_new``: one run fewer); the grant users are given no tags (a service user
    needs none), so tags someone set on them are replaced.
    """
    rights = [
        {"user": g.user, "configure": g.configure, "write": g.write, "read": g.read} for g in grants
    ]
    if operator:
        rights.append({"user": operator, "configure": ".*", "write": ".*", "read": ".*"})
    if shutil.which("rabbitmqctl"):
        if create_vhost and not vhost_is_new:
            create_vhost = (
                vhost not in (await _rabbitmqctl("list_vhosts", "name", node=api.node)).split()
            )
        definitions = {
            "vhosts": [{"name": vhost}] if create_vhost else [],
            "users": [
                {
                    "name": g.user,
                    "password_hash": _password_hash(g.password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": "",
                }
                for g in grants
            ],
            "permissions": [{**r, "vhost": vhost} for r in rights],
        }
        await _rabbitmqctl(
            "import_definitions", "--format", "json", stdin=json.dumps(definitions), node=api.node
        )
        return
    if create_vhost:
        await asyncio.to_thread(_api, "PUT", f"/api/vhosts/{_q(vhost)}", {}, api=api)
    for g in grants:
        await asyncio.to_thread(
            _api, "PUT", f"/api/users/{_q(g.user)}", {"password": g.password, "tags": ""}, api=api
        )
    for r in rights:
        user = r["user"]
        await asyncio.to_thread(
            _api,
            "PUT",
            f"/api/permissions/{_q(vhost)}/{_q(user)}",
            {k: r[k] for k in ("configure", "write", "read")},
            api=api,
        )


async def ensure_vhost(
    vhost: str, *, user: str = "guest", is_new: bool = False, api: ManagementApi = LOCAL_API
) -> None:
    """Create the vhost if needed and give ``user`` full rights on it."""
    await ensure_access(vhost, operator=user, vhost_is_new=is_new, api=api)


async def ensure_user(
    user: str,
    password: str,
    *,
    vhost: str,
    configure: str,
    write: str,
    read: str,
    api: ManagementApi = LOCAL_API,
) -> None:
    """Create or update a broker user with exactly these permissions on ``vhost``."""
    grant = Grant(user, password, configure, write, read)
    await ensure_access(vhost, [grant], create_vhost=False, api=api)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


async def remove_access(
    users: Sequence[str], vhost: str | None = None, *, api: ManagementApi = LOCAL_API
) -> None:
    """Delete these users (those that exist) and, if given, the vhost (if it exists).

    With rabbitmqctl, one ``eval`` run does it all (names are plain: letters, digits, ``_.:-``).
    A user or vhost that does not exist is no error; any other error is raised. Should the
    broker's internal functions differ (another RabbitMQ version: ``undef``), one command per
    user and vhost instead.
    """
    if shutil.which("rabbitmqctl") and all(map(_PLAIN_NAME.fullmatch, [*users, vhost or "x"])):
        names = ", ".join(f'<<"{u}">>' for u in users)
        expression = (
            f'{{[catch rabbit_auth_backend_internal:delete_user(U, <<"orderflow">>) '
            f"|| U <- [{names}]], "
            + (f'catch rabbit_vhost:delete(<<"{vhost}">>, <<"orderflow">>)' if vhost else "ok")
            + "}."
        )
        answer = await _rabbitmqctl("eval", expression, node=api.node)
        if "undef" not in answer:
            failed = _unexpected_errors(answer)
            if failed:
                raise InfrastructureUnavailable(f"removing {users} / {vhost}: {failed[:500]}")
            return
    for user in users:
        await delete_user(user, api=api)
    if vhost is not None:
        await delete_vhost(vhost, api=api)


def _unexpected_errors(answer: str) -> str:
    """The errors of an eval answer other than "no such user/vhost" (empty when none)."""
    errors = re.findall(r"\{error,.*?\}\}|\{'EXIT',.*", answer)
    return "; ".join(e for e in errors if "no_such_user" not in e and "no_such_vhost" not in e)


async def delete_user(user: str, *, api: ManagementApi = LOCAL_API) -> None:
    if shutil.which("rabbitmqctl"):
        if user in (await _rabbitmqctl("list_users", node=api.node)).split():
            await _rabbitmqctl("delete_user", user, node=api.node)
        return
    await asyncio.to_thread(_api, "DELETE", f"/api/users/{_q(user)}", api=api)


async def delete_vhost(vhost: str, *, api: ManagementApi = LOCAL_API) -> None:
    if shutil.which("rabbitmqctl"):
        existing = (await _rabbitmqctl("list_vhosts", "name", node=api.node)).split()
        if vhost in existing:
            await _rabbitmqctl("delete_vhost", vhost, node=api.node)
        return
    await asyncio.to_thread(_api, "DELETE", f"/api/vhosts/{_q(vhost)}", api=api)


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (``/`` when it names none); a cluster's list names one."""
    path = urllib.parse.urlsplit(url_list(url)[0]).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def with_vhost(url: str, vhost: str) -> str:
    """The URL (every node's, for a cluster's list) naming ``vhost``."""
    return ",".join(
        urllib.parse.urlsplit(one)._replace(path="/" + _q(vhost)).geturl() for one in url_list(url)
    )


async def unacked_counts(
    vhost: str, *, host: str = "127.0.0.1", api: ManagementApi = LOCAL_API
) -> dict[str, int] | None:
    """Messages delivered and not yet acked, per queue of ``vhost``; None when unknown.

    AMQP tells only what is ready; this asks ``rabbitmqctl`` (a local broker) or the management
    API. Both report the broker's statistics, refreshed every ``collect_statistics_interval``
    (5 s by default): a count taken within seconds of the last delivery may be stale."""
    try:
        if shutil.which("rabbitmqctl") and host in ("127.0.0.1", "localhost", "::1"):
            columns = ("name", "messages_unacknowledged")
            out = await _rabbitmqctl(
                "list_queues",
                "-p",
                vhost,
                "--formatter",
                "json",
                *columns,
                timeout=15,
                node=api.node,
            )
            queues = json.loads(out)
        else:
            path = f"/api/queues/{_q(vhost)}?columns=name,messages_unacknowledged"
            queues = await asyncio.to_thread(_api, "GET", path, api=api)
        return {q["name"]: int(q.get("messages_unacknowledged") or 0) for q in queues} or None
    except (OrderflowError, OSError, ValueError, KeyError, TypeError):
        return None
