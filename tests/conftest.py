from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from libs.testing.infra import DEFAULT_ADMIN_DSN, DEFAULT_AMQP, temporary_database, temporary_vhost

# Tests never export traces unless a test sets up its own receiver.
os.environ.setdefault("OTEL_SDK_DISABLED", "false")
os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)

AMQP_BASE = os.environ.get("ORDERFLOW_TEST_AMQP_URL", DEFAULT_AMQP)
ADMIN_DSN = os.environ.get("ORDERFLOW_TEST_ADMIN_DSN", DEFAULT_ADMIN_DSN)


@pytest.fixture
async def amqp_url() -> AsyncIterator[str]:
    """A fresh vhost of its own for this test."""
    async with temporary_vhost(AMQP_BASE) as url:
        yield url


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A fresh database with outbox and inbox tables for this test."""
    async with temporary_database(ADMIN_DSN) as dsn:
        yield dsn
