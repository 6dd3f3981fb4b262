"""The benchmark's latency floor: broker trips and the leanest hop transaction, each measured
alone against the real broker and database, and the floor they add up to."""

from __future__ import annotations

import math

import pytest

from libs.messaging.admin import with_vhost
from libs.pg.pool import connection
from libs.settings import Settings
from orderflow.bench import raw
from orderflow.bench import relay as relay_bench
from saga.domain.order_saga import order_saga

pytestmark = pytest.mark.integration


async def test_trips_and_a_transaction_are_measured_for_real() -> None:
    settings = Settings()
    async with relay_bench.bench_env(
        with_vhost(settings.amqp_url, "/"), settings.pg_admin_dsn
    ) as env:
        trip = await raw.trip_latency_ms(env, count=30)
        client_trip = await raw.trip_latency_ms(env, count=30, client=True)
        transaction = await raw.transaction_latency_ms(env.dsn, count=30)
        async with connection(env.dsn) as conn:  # each transaction did commit, 30 times
            assert await conn.fetchval("SELECT v FROM bench_hop_state WHERE id = 1") == 30
            assert await conn.fetchval("SELECT count(*) FROM bench_hop_outbox") == 30
        async with env.connection.channel() as channel:  # the client trip cleaned up after itself
            sink = await channel.get_queue("bench.sink")
            assert sink.declaration_result.message_count == 0
    for value in (trip, client_trip, transaction):
        assert math.isfinite(value) and 0.05 < value < 100, (trip, client_trip, transaction)


def test_the_floor_is_the_order_sagas_critical_path() -> None:
    # PlaceOrder, OrderCreated; ProcessPayment, PaymentCaptured; ReserveInventory,
    # InventoryReserved; ApproveOrder, OrderConfirmed (to the client): 8 trips. order_svc
    # twice, payment_svc, inventory_svc, the saga's start and its first two replies: 7
    assert [step.name for step in order_saga().steps] == ["payment", "inventory", "approval"]
    assert (raw.TRIPS_PER_SAGA, raw.TRANSACTIONS_PER_SAGA) == (8, 7)
    assert raw.critical_path(4) == (10, 9)
    figures = {
        "raw_trip_p50_ms": 1.5,
        "raw_client_trip_p50_ms": 1.0,
        "raw_hop_transaction_p50_ms": 0.5,
    }
    assert raw.latency_floor_ms(figures) == 7 * 1.5 + 1.0 + 7 * 0.5
    assert raw.latency_floor_ms({"raw_trip_p50_ms": 1.5}) is None
