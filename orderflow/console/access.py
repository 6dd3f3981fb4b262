"""Who may do what in the console: users, roles, sessions, CSRF tokens.

Users live in ``<secrets dir>/console_users`` (mode 0600), one per line,
``name:role:scrypt$<n>$<r>$<p>$<salt>$<hash>``; the password itself is never stored, shown in
a page or logged. Roles: ``operator`` may act (retry, compensate, replay, edit, purge);
``viewer`` may only read and gets 403 on every action. Sessions are a signed cookie (HMAC with
``<secrets dir>/console_session_key``) naming the user, checked against the users file on every
request, so removing a user or changing a role takes effect at once. Every form carries a CSRF
token bound to a per-browser cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from libs.errors import OrderflowError
from libs.secrets import ensure_secret_file

__all__ = [
    "ROLES",
    "Access",
    "BadUser",
    "Session",
    "User",
    "add_user",
    "hash_password",
    "load_users",
    "verify_password",
]

ROLES = ("operator", "viewer")
USERS_FILE = "console_users"
KEY_FILE = "console_session_key"
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,39}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class BadUser(OrderflowError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    role: str
    expires: float
    tag: str = ""  # from the password hash it was opened with: a new password voids it


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt" or int(n) > 2**20:
            return False
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def load_users(secrets_dir: Path) -> dict[str, User]:
    path = secrets_dir / USERS_FILE
    users: dict[str, User] = {}
    if not path.is_file():
        return users
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[1] not in ROLES or not _NAME.match(parts[0]):
            raise BadUser(f"{path}, line {number}: expected name:role:hash with a role of {ROLES}")
        users[parts[0]] = User(parts[0], parts[1], parts[2])
    return users


def add_user(secrets_dir: Path, name: str, role: str, password: str) -> None:
    """Add a user (or replace its role and password); the file stays 0600."""
    if not _NAME.match(name):
        raise BadUser(
            f"user name {name[:40]!r}: lower-case letters, digits, '_', '.', '-', up to 40"
        )
    if role not in ROLES:
        raise BadUser(f"role {role[:20]!r}: one of {', '.join(ROLES)}")
    if len(password) < 12:
        raise BadUser("a console password has at least 12 characters")
    users = load_users(secrets_dir)
    users[name] = User(name, role, hash_password(password))
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / USERS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{u.name}:{u.role}:{u.password_hash}\n" for u in users.values())
    os.replace(tmp, path)


class Access:
    """Signs and checks sessions and CSRF tokens; checks passwords, slowing down guessers."""

    def __init__(self, secrets_dir: Path, *, session_seconds: float = 8 * 3600) -> None:
        self._dir = secrets_dir
        self._key = ensure_secret_file(secrets_dir, KEY_FILE).encode()
        if len(self._key) < 24:
            raise BadUser(f"{secrets_dir / KEY_FILE} holds no usable key: delete it and restart")
        self._session_seconds = session_seconds
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._dummy = hash_password(secrets.token_urlsafe(16))

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())

    def _tag(self, user: User) -> str:
        return self._sign("password:" + user.password_hash)[:16]

    def login(
        self, name: str, password: str, *, now: float | None = None, client: str = ""
    ) -> Session | None:
        """A session for the right password; None otherwise (and after 5 failures for one name
        from one client within 5 minutes, None for that client's tries during the next minute:
        a stranger cannot lock the operator out from elsewhere). An unknown name costs the same
        hash as a known one."""
        now = time.time() if now is None else now
        key = (client, name)
        recent = [t for t in self._failures.get(key, []) if now - t < 300]
        if len(recent) >= 5 and now - recent[-1] < 60:
            return None
        user = load_users(self._dir).get(name)
        good = verify_password(password, user.password_hash if user else self._dummy)
        if user is None or not good:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures[key] = [*recent, now][-10:]
            return None
        self._failures.pop(key, None)
        return Session(user.name, user.role, now + self._session_seconds, self._tag(user))

    def cookie(self, session: Session) -> str:
        body = _b64(json.dumps([session.user, session.role, session.expires, session.tag]).encode())
        return f"{body}.{self._sign('session:' + body)}"

    def session(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie names, if signed by us, unexpired, and its user still has that
        role."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1000 or not cookie.isascii():
            return None
        body, signature = cookie.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign("session:" + body).encode()):
            return None
        try:
            name, role, expires, tag = json.loads(_unb64(body))
        except (ValueError, TypeError):
            return None
        if (time.time() if now is None else now) > float(expires):
            return None
        user = load_users(self._dir).get(name)
        if user is None or user.role != role or tag != self._tag(user):
            return None  # gone, demoted, or its password changed since
        return Session(name, role, float(expires), tag)

    def csrf_token(self, browser: str) -> str:
        """The token forms carry, bound to the browser's own random cookie."""
        return self._sign("csrf:" + browser)

    def csrf_ok(self, browser: str | None, token: str | None) -> bool:
        if not browser or not token or len(token) > 200 or not token.isascii():
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(browser).encode())
