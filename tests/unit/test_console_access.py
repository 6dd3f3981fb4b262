"""Console users, sessions and CSRF tokens: each check refuses what it must."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from orderflow.console.access import (
    Access,
    BadUser,
    add_user,
    hash_password,
    load_users,
    verify_password,
)

PASSWORD = "correct horse battery"


def test_passwords_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    stored = hash_password(PASSWORD)
    assert PASSWORD not in stored
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "!", stored)
    assert not verify_password(PASSWORD, "scrypt$garbage")
    add_user(tmp_path, "dana", "operator", PASSWORD)
    path = tmp_path / "console_users"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in path.read_text()
    assert load_users(tmp_path)["dana"].may_act


@pytest.mark.parametrize(
    ("name", "role", "password", "why"),
    [
        ("Dana!", "operator", PASSWORD, "user name"),
        ("dana", "admin", PASSWORD, "role"),
        ("dana", "viewer", "short", "12 characters"),
        ("a:b", "viewer", PASSWORD, "user name"),
    ],
)
def test_bad_users_are_refused_with_a_reason(
    tmp_path: Path, name: str, role: str, password: str, why: str
) -> None:
    with pytest.raises(BadUser, match=why):
        add_user(tmp_path, name, role, password)


def test_a_session_is_signed_expires_and_follows_the_users_file(tmp_path: Path) -> None:
    add_user(tmp_path, "dana", "operator", PASSWORD)
    access = Access(tmp_path)
    assert access.login("dana", "wrong password!") is None
    assert access.login("nobody", PASSWORD) is None
    session = access.login("dana", PASSWORD)
    assert session is not None and session.role == "operator"
    cookie = access.cookie(session)
    assert access.session(cookie) == session
    body, signature = cookie.split(".")
    forged = Access(tmp_path / "elsewhere").cookie(session)  # another key signs it
    assert access.session(forged) is None
    assert access.session(body + "." + signature[:-2] + "AA") is None
    assert access.session(cookie, now=session.expires + 1) is None
    assert access.session("é" + cookie) is None  # not ASCII: refused, not an error
    add_user(tmp_path, "dana", "operator", PASSWORD + "!")  # a new password: old sessions void
    assert access.session(cookie) is None
    renewed = access.login("dana", PASSWORD + "!")
    assert renewed is not None and access.session(access.cookie(renewed)) == renewed
    add_user(tmp_path, "dana", "viewer", PASSWORD + "!")  # demoted: the session is void
    assert access.session(access.cookie(renewed)) is None


def test_an_empty_session_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "console_session_key").write_text("")
    with pytest.raises(BadUser, match="no usable key"):
        Access(tmp_path)


def test_guessing_is_slowed_down(tmp_path: Path) -> None:
    add_user(tmp_path, "dana", "operator", PASSWORD)
    access = Access(tmp_path)
    now = time.time()
    for i in range(5):
        assert access.login("dana", f"guess number {i}", now=now + i) is None
    assert access.login("dana", PASSWORD, now=now + 6) is None  # locked for a minute
    # ...for that client only: a stranger's guesses do not lock the operator out elsewhere
    assert access.login("dana", PASSWORD, now=now + 6, client="10.0.0.7") is not None
    assert access.login("dana", PASSWORD, now=now + 70) is not None


def test_a_csrf_token_belongs_to_one_browser(tmp_path: Path) -> None:
    access = Access(tmp_path)
    token = access.csrf_token("browser-one-random-cookie")
    assert access.csrf_ok("browser-one-random-cookie", token)
    assert not access.csrf_ok("browser-two-random-cookie", token)
    assert not access.csrf_ok("browser-one-random-cookie", None)
    assert not access.csrf_ok(None, token)
    assert not access.csrf_ok("browser-one-random-cookie", token[:-1] + "x")
