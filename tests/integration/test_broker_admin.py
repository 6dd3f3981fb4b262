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
