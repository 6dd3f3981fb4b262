"""Secrets come from the environment or from files, and nowhere else.

A secret is looked up, in order: an explicit value (an ``ORDERFLOW_*`` variable read into a
``SecretStr``), a file named by an ``*_FILE`` variable, then ``<secrets dir>/<name>`` (what
``orderflow setup`` writes, mode 0600, for local use). Values are ``SecretStr`` in settings, so
they print as ``**********``; URLs shown to people go through ``redact``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

__all__ = [
    "ensure_secret_file",
    "read_secret",
    "redact",
    "url_list",
    "user_of",
    "with_credentials",
    "without_password",
]


def read_secret(
    *, value: SecretStr | None, file: Path | None, secrets_dir: Path, name: str
) -> str | None:
    if value is not None:
        return value.get_secret_value()
    for path in (file, secrets_dir / name):
        if path is not None and path.is_file():
            return path.read_text().strip()
    return None


def ensure_secret_file(secrets_dir: Path, name: str) -> str:
    """The secret in ``<secrets dir>/<name>``, generated (random, 0600) when missing. The file
    appears whole or not at all (written aside, then linked into place), so a second process
    starting at the same moment never reads it half-written."""
    path = secrets_dir / name
    if path.is_file():
        return path.read_text().strip()
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(24)
    aside = secrets_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    try:
        os.link(aside, path)  # fails if another process was first: then its value counts
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        aside.unlink()
    return value


def url_list(url: str) -> list[str]:
    """The URLs a setting names: a comma-separated list of whole URLs (a cluster's nodes), or
    the one URL (a libpq multi-host DSN too, whose hosts are not URLs)."""
    parts = [p.strip() for p in url.split(",") if p.strip()]
    if len(parts) > 1 and all("://" in p for p in parts):
        return parts
    return [url.strip()]


def _each(url: str, change: Callable[[str], str]) -> str:
    """``change`` applied to every URL of :func:`url_list`, joined again."""
    return ",".join(change(one) for one in url_list(url))


def with_credentials(
    url: str, *, user: str | None = None, password: str | None = None, keep_password: bool = True
) -> str:
    """The URL with its user and/or password replaced (either may stay as it was); every node's
    URL of a cluster's list."""
    return _each(
        url, lambda one: _with_credentials(one, user, password, keep_password=keep_password)
    )


def _with_credentials(
    url: str, user: str | None, password: str | None, *, keep_password: bool
) -> str:
    parts = urlsplit(url)
    username = user if user is not None else (parts.username or "")
    pw = password if password is not None else (parts.password if keep_password else None)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(username, safe="")
    if pw is not None:
        netloc += ":" + quote(pw, safe="")
    netloc += "@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def without_password(url: str) -> str:
    """The URL with its user but no password (a process that reads its password elsewhere)."""
    return with_credentials(url, keep_password=False)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs (every node's, for a list)."""
    return _each(url, _redact)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def user_of(url: str) -> str | None:
    """The user a URL logs in as (a cluster's list: its first node's; they are the same)."""
    return urlsplit(url_list(url)[0]).username
