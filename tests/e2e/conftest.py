"""A whole orderflow system per test: own vhost, own four databases, services as processes."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from libs.pg.admin import database_of
from libs.settings import Settings
from libs.testing.infra import isolated_system
from orderflow.check import CheckReport, check
from orderflow.client import OrderClient
from orderflow.setup import setup
from orderflow.supervisor import Supervisor
from orderflow.system import SYSTEM
from tests.conftest import ADMIN_DSN, AMQP_BASE

ROOT = Path(__file__).parents[2]
FAST_SAGA = {
    "ORDERFLOW_SAGA__STEP_DEADLINE": "2",
    "ORDERFLOW_SAGA__RETRIES": "1",
    "ORDERFLOW_SAGA__TIMER_SWEEP": "0.5",
}


@dataclass
class System:
    settings: Settings
    env: dict[str, str]
    supervisor: Supervisor
    client: OrderClient
    log: io.StringIO

    async def place(self, customer: str, *items: tuple[str, int, str]) -> str:
        outcome = await self.client.place(
            customer_id=customer, items=[(s, q, Decimal(p)) for s, q, p in items]
        )
        return outcome.order_id

    async def wait(self, order_ids: list[str], timeout: float = 60) -> None:
        if not await self.client.wait(order_ids, timeout=timeout):
            pending = [o for o in order_ids if self.client.outcomes[o].status == "PENDING"]
            raise AssertionError(
                f"{len(pending)} orders still PENDING, e.g. {pending[:3]}\n"
                + self.log.getvalue()[-4000:]
            )

    def status(self, order_id: str) -> str:
        return self.client.outcomes[order_id].status

    async def quiet_check(self, timeout: float = 20) -> CheckReport:
        """Wait until every invariant holds (replies and outboxes settle), or fail with the report."""
        deadline = time.monotonic() + timeout
        while True:
            # dead letters are each test's own business (several make them on purpose)
            report = await check(self.settings, allow_dead_letters=True)
            if report.ok or time.monotonic() > deadline:
                assert report.ok, "\n".join(report.violations[:20])
                return report
            await asyncio.sleep(0.5)

    async def scalar(self, service: str, query: str, *args: Any, admin: bool = False) -> Any:
        """One value from a service's database, as the service's role (or as the administrator)."""
        from libs.pg.pool import connection

        dsn = self.settings.dsn_for(service)
        if admin:
            dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/" + database_of(dsn)
        async with connection(dsn) as conn:
            return await conn.fetchval(query, *args)


@asynccontextmanager
async def isolated_env(
    extra_env: dict[str, str] | None = None, secret_values: dict[str, str] | None = None
) -> AsyncIterator[dict[str, str]]:
    """Environment variables naming a vhost and four databases of this test's own (all empty),
    service roles and users as in production, and a secrets directory of its own."""
    async with isolated_system(
        SYSTEM, admin_dsn=ADMIN_DSN, amqp_base=AMQP_BASE, prefix="ofe2e"
    ) as env:
        for name, value in (secret_values or {}).items():  # planted before setup reads them
            name = name.replace("{users}", env["ORDERFLOW_AMQP_USER_PREFIX"])
            (Path(env["ORDERFLOW_SECRETS_DIR"]) / name).write_text(value)
        # pools of 4: two systems run side by side under `make test` (max_connections 100)
        yield {
            **env,
            "ORDERFLOW_RELAY__SWEEP_INTERVAL": "2",
            "ORDERFLOW_POOL_SIZE": "4",
            **FAST_SAGA,
            **(extra_env or {}),
        }


@asynccontextmanager
async def running_system(
    *,
    replicas: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
    services: tuple[str, ...] = ("order_svc", "payment_svc", "inventory_svc", "saga"),
    secret_values: dict[str, str] | None = None,
) -> AsyncIterator[System]:
    async with AsyncExitStack() as stack:
        env = await stack.enter_async_context(isolated_env(extra_env, secret_values))
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        stack.callback(_restore, saved)
        settings = Settings()
        await setup(settings)
        log = io.StringIO()
        supervisor = Supervisor(
            env={**os.environ, **env},
            replicas=replicas,
            services=services,
            restart=False,
            output=log,
            color=False,
        )
        stack.push_async_callback(supervisor.stop_all)
        stack.callback(_dump_log, log)
        await supervisor.start_all(timeout=60)
        client = await OrderClient.open(env["ORDERFLOW_AMQP_URL"])
        stack.push_async_callback(client.close)
        yield System(settings, env, supervisor, client, log)


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _dump_log(log: io.StringIO) -> None:
    """Keep the services' output of the last e2e test for a post-mortem."""
    path = Path(os.environ.get("ORDERFLOW_E2E_LOG", "var/e2e-last.log"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(log.getvalue())


@pytest.fixture
async def system() -> AsyncIterator[System]:
    async with running_system() as s:
        yield s


async def cli(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run `orderflow ARGS` as a user would; (exit code, stdout+stderr)."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orderflow.cli",
        *args,
        env={**os.environ, **env, "COLUMNS": "200", "TERM": "dumb"},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()
