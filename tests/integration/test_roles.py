"""Setting a service's roles up from several processes at once (two test workers, two operators
running setup): PostgreSQL refuses concurrent changes of one role ("tuple concurrently
updated"), so ``ensure_roles`` serialises them."""

from __future__ import annotations

import asyncio

import pytest

from libs.pg.pool import connect
from libs.pg.roles import ensure_roles, owner_of
from tests.conftest import ADMIN_DSN

pytestmark = pytest.mark.integration


async def test_many_setups_of_one_role_at_once_all_succeed() -> None:
    runtime = "oftest_roles_race"
    admins = [await connect(ADMIN_DSN) for _ in range(8)]
    try:
        for _ in range(3):
            results = await asyncio.gather(
                *(
                    ensure_roles(a, runtime=runtime, password=f"pw{i}")
                    for i, a in enumerate(admins)
                ),
                return_exceptions=True,
            )
            assert [r for r in results if isinstance(r, BaseException)] == []
        names = await admins[0].fetch(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY($1::text[])",
            [runtime, owner_of(runtime)],
        )
        assert {(r["rolname"], r["rolcanlogin"]) for r in names} == {
            (runtime, True),
            (owner_of(runtime), False),
        }
    finally:
        for role in (runtime, owner_of(runtime)):
            await admins[0].execute(f'DROP ROLE IF EXISTS "{role}"')
        for a in admins:
            await a.close()
