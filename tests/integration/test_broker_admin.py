"""Provisioning broker users: any password works, and none shows up in an error."""

from __future__ import annotations

import pytest

from libs.errors import ConfigurationError
from libs.messaging.admin import delete_user, ensure_user, vhost_of
from libs.messaging.connection import connect
from libs.secrets import with_credentials

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("password", ["-starts-with-a-dash", "has spaces and 'quotes' \\ and ;|&"])
async def test_a_user_gets_exactly_the_password_given_whatever_it_contains(
    amqp_url: str, password: str
) -> None:
    user = "oftest_admin_user"
    await ensure_user(
        user, password, vhost=vhost_of(amqp_url), configure="^$", write="^$", read="^$"
    )
    try:
        connection = await connect(
            with_credentials(amqp_url, user=user, password=password), name="t"
        )
        await connection.close()
        with pytest.raises(ConfigurationError) as refused:
            await connect(with_credentials(amqp_url, user=user, password="wrong"), name="t")
        assert "wrong" not in str(refused.value)
        assert password not in str(refused.value)
    finally:
        await delete_user(user)


async def test_one_provisioning_run_makes_the_vhost_users_and_rights_and_one_removes_them() -> None:
    """ensure_access: one rabbitmqctl run creates the vhost, the users with their passwords and
    exact rights, and the operator's; remove_access deletes them all (a user or vhost already
    gone is no error)."""
    from libs.messaging.admin import (
        Grant,
        _rabbitmqctl,
        ensure_access,
        remove_access,
        with_vhost,
    )
    from libs.testing.infra import DEFAULT_AMQP, unique_name

    vhost = unique_name("oftest")
    users = [f"{vhost}_a", f"{vhost}_b"]
    grants = [Grant(u, f"pw-{u}", "^$", f"^{u}$", "^$") for u in users]
    await ensure_access(vhost, grants, operator="guest")
    try:
        rights = await _rabbitmqctl("list_permissions", "-p", vhost, node=None)
        for user in users:
            assert f"{user}\t^$\t^{user}$\t^$" in rights
        assert "guest\t.*\t.*\t.*" in rights
        url = with_vhost(DEFAULT_AMQP, vhost)
        connection = await connect(
            with_credentials(url, user=users[1], password=f"pw-{users[1]}"), name="t"
        )
        await connection.close()
    finally:
        await remove_access([*users, f"{vhost}_never_made"], vhost)
    assert not set(users) & set((await _rabbitmqctl("list_users", node=None)).split())
    assert vhost not in (await _rabbitmqctl("list_vhosts", "name", node=None)).split()
