"""The benchmark's latency floor: a broker trip and a hop-shaped transaction, each measured alone
against the real broker and database, and the floor they add up to."""

from __future__ import annotations

import math

import pytest

from libs.messaging.admin import with_vhost
from libs.pg.pool import connection
from libs.settings import Settings
from orderflow.bench import raw
from orderflow.bench import relay as relay_bench

pytestmark = pytest.mark.integration


async def test_a_trip_and_a_transaction_are_measured_for_real() -> None:
    settings = Settings()
    async with relay_bench.bench_env(
        with_vhost(settings.amqp_url, "/"), settings.pg_admin_dsn
    ) as env:
        trip = await raw.trip_latency_ms(env, count=30)
        transaction = await raw.transaction_latency_ms(env.dsn, count=30)
        # each transaction left its rows: it did commit, 30 times
        async with env.connection.channel() as channel:
            sink = await channel.get_queue("bench.sink")
            assert sink.declaration_result.message_count == 0  # every message was consumed
        async with connection(env.dsn) as conn:
            assert await conn.fetchval("SELECT v FROM bench_hop_state WHERE id = 1") == 30
            assert await conn.fetchval("SELECT count(*) FROM bench_hop_outbox") == 30
    for value in (trip, transaction):
        assert math.isfinite(value) and 0.05 < value < 100, (trip, transaction)


def test_the_floor_is_the_critical_paths_trips_and_transactions() -> None:
    figures = {"raw_trip_p50_ms": 1.5, "raw_hop_transaction_p50_ms": 1.0}
    assert raw.latency_floor_ms(figures) == 8 * 1.5 + 7 * 1.0
    assert raw.latency_floor_ms({"raw_trip_p50_ms": 1.5}) is None
