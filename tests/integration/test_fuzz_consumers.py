"""Property-based fuzzing of every consumer, against its real database (Hypothesis).

For each service, arbitrary bodies, CloudEvents of the right type with arbitrary data, and valid
data with one field replaced by anything, go through the real consumer runner. The property: no
exception escapes; every delivery is settled exactly once; a message that is not processed is
dead-lettered and leaves the database exactly as it was; and afterwards a valid message is still
processed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import REGISTRY
from libs.outbox.relay import Wakeup
from libs.pg.pool import connect, create_pool
from libs.service.runner import MessageRunner
from libs.settings import ConsumerSettings
from libs.testing.fakes import FakeDelivery, RecordingDeadLetters
from libs.testing.infra import temporary_database
from orderflow.system import SYSTEM, own_migrations

pytestmark = pytest.mark.integration
ORDER = "5d3c6a55-2b7e-4a8f-9a43-2f0e4b1c9d10"
LINE = {"sku": "SPROCKET", "quantity": 1, "unit_price": "2.25"}
VALID: dict[str, dict[str, Any]] = {
    "order.place_order.v1": {"order_id": ORDER, "customer_id": "carol", "items": [LINE]},
    "order.approve_order.v1": {"order_id": ORDER},
    "order.reject_order.v1": {"order_id": ORDER, "reason": "r"},
    "payment.process_payment.v1": {"order_id": ORDER, "customer_id": "carol", "amount": "2.25"},
    "payment.refund_payment.v1": {"order_id": ORDER},
    "inventory.reserve_inventory.v1": {
        "order_id": ORDER,
        "items": [{"sku": "SPROCKET", "quantity": 1}],
    },
    "inventory.release_inventory.v1": {"order_id": ORDER},
    "order.order_created.v1": {
        "order_id": ORDER,
        "customer_id": "carol",
        "items": [LINE],
        "total": "2.25",
        "currency": "USD",
    },
    "order.order_confirmed.v1": {"order_id": ORDER, "total": "2.25"},
    "order.order_rejected.v1": {"order_id": ORDER, "reason": "r"},
    "payment.payment_captured.v1": {"order_id": ORDER, "customer_id": "carol", "amount": "2.25"},
    "payment.payment_declined.v1": {"order_id": ORDER, "reason": "r"},
    "payment.payment_refunded.v1": {"order_id": ORDER, "amount": "2.25"},
    "inventory.inventory_reserved.v1": {"order_id": ORDER},
    "inventory.inventory_reservation_failed.v1": {"order_id": ORDER, "reason": "r"},
    "inventory.inventory_released.v1": {"order_id": ORDER},
}
TABLES = {
    "order_svc": ("orders", "order_lines", "inbox", "outbox"),
    "payment_svc": ("customers", "payments", "ledger", "inbox", "outbox"),
    "inventory_svc": ("stock", "reservations", "reservation_lines", "inbox", "outbox"),
    "saga": ("saga_instance", "saga_log", "inbox", "outbox"),
}


def handlers_of(service: str) -> dict[type, Any]:
    if service == "saga":
        from saga.bootstrap import definition

        return dict(definition().handlers)
    module = __import__(f"{service}.handlers", fromlist=["HANDLERS"])
    return dict(module.HANDLERS)


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    service: str
    runner: MessageRunner
    dead: RecordingDeadLetters
    dsn: str
    pool: Any

    def types(self) -> list[str]:
        return sorted(REGISTRY.spec_of(m).type for m in handlers_of(self.service))

    async def snapshot(self) -> dict[str, str]:
        async with self.pool.acquire() as conn:
            return {
                t: await conn.fetchval(
                    f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {t} x"
                )
                for t in TABLES[self.service]
            }

    async def deliver(self, body: bytes, type_name: str | None = None) -> FakeDelivery:
        delivery = FakeDelivery(body=body, type=type_name, message_id=str(uuid.uuid4()))
        await self.runner(delivery)  # type: ignore[arg-type]
        return delivery


def event(type_name: str, data: Any, **overrides: Any) -> bytes:
    doc = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/fuzz",
        "type": type_name,
        "time": "2026-11-26T12:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    }
    doc.update(overrides)
    return json.dumps(doc, allow_nan=True).encode()


@pytest.fixture(scope="module", params=list(SYSTEM.names))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    service = request.param
    loop = asyncio.new_event_loop()
    db = temporary_database(prefix="offuzz", migrations=own_migrations(service))
    dsn = loop.run_until_complete(db.__aenter__())
    try:

        async def build() -> Harness:
            conn = await connect(dsn)
            if service == "payment_svc":
                await conn.execute("INSERT INTO customers VALUES ('carol', 'Carol', 1000, 1000)")
            if service == "inventory_svc":
                await conn.execute("INSERT INTO stock VALUES ('SPROCKET', 'Sprocket', 100, 100)")
            await conn.close()
            pool = await create_pool(dsn, max_size=2)
            dead = RecordingDeadLetters()
            runner = MessageRunner(
                consumer=service,
                queue=f"{service}.fuzz",
                source=f"/orderflow/{service}",
                pool=pool,
                registry=REGISTRY,
                handlers=handlers_of(service),
                dead_letters=dead,  # type: ignore[arg-type]
                wakeup=Wakeup(None),
                settings=ConsumerSettings(retry_base=0.001, retry_cap=0.01),
            )
            return Harness(loop, service, runner, dead, dsn, pool)

        h = loop.run_until_complete(build())
        yield h
        loop.run_until_complete(h.pool.close())
    finally:
        loop.run_until_complete(db.__aexit__(None, None, None))
        loop.close()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def fuzzed(draw: st.DrawFn, types: list[str]) -> tuple[str | None, bytes]:
    type_name = draw(st.sampled_from(types))
    valid = VALID[type_name]
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return None, draw(st.binary(max_size=300))
    if choice == 1:
        return type_name, event(type_name, draw(json_values))
    if choice == 2:
        key = draw(st.sampled_from(sorted(valid)))
        return type_name, event(type_name, {**valid, key: draw(json_values)})
    if choice == 3:
        attribute = draw(
            st.sampled_from(["id", "specversion", "time", "type", "source", "subject"])
        )
        return type_name, event(type_name, valid, **{attribute: draw(json_values)})
    return type_name, event(type_name, {**valid, "order_id": str(uuid.uuid4())})


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_escapes_the_runner_or_leaves_a_partial_write(
    harness: Harness, data: st.DataObject
) -> None:
    type_name, body = data.draw(fuzzed(harness.types()))

    async def check() -> None:
        before = await harness.snapshot()
        letters = len(harness.dead.letters)
        stats = harness.runner.stats
        handled = stats.processed + stats.duplicates
        delivery = await harness.deliver(body, type_name)
        assert delivery.settled == ["ack"], delivery.settled
        if len(harness.dead.letters) > letters:
            assert await harness.snapshot() == before
        else:  # this delivery, not an earlier example, was processed (or absorbed)
            assert stats.processed + stats.duplicates == handled + 1

    harness.loop.run_until_complete(check())


@st.composite
def hostile(draw: st.DrawFn, types: list[str]) -> tuple[str | None, bytes]:
    """Bodies large and deep enough to find what broke the batch path: deep nesting anywhere,
    huge numbers, long strings, many keys; or any of the smaller fuzzed ones."""
    type_name = draw(st.sampled_from(types))
    valid = VALID[type_name]
    choice = draw(st.integers(0, 4))
    depth = draw(st.integers(1, 5000))
    if choice == 0:
        return type_name, ("[" * depth + "]" * depth).encode()
    if choice == 1:
        nested = '{"a":' * depth + "1" + "}" * depth
        return type_name, event(type_name, {"x": 0}).replace(b'{"x": 0}', nested.encode())
    if choice == 2:
        literal = draw(st.sampled_from(["1e999999", "NaN", "-Infinity", "9" * 5000]))
        key = draw(st.sampled_from(sorted(valid)))
        return type_name, event(type_name, {**valid, key: 7}).replace(
            f'"{key}": 7'.encode(), f'"{key}": {literal}'.encode()
        )
    if choice == 3:
        size = draw(st.integers(1000, 200_000))
        return type_name, event(type_name, {**valid, "x": "A" * size})
    return draw(fuzzed(types))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_batch_of_hostile_input_escapes_the_runner_or_leaves_a_delivery_unsettled(
    harness: Harness, data: st.DataObject
) -> None:
    drawn = data.draw(st.lists(hostile(harness.types()), min_size=2, max_size=8))

    async def check() -> None:
        deliveries = [
            FakeDelivery(body=body, type=type_name, message_id=str(uuid.uuid4()))
            for type_name, body in drawn
        ]
        await harness.runner.process_batch(deliveries)  # type: ignore[arg-type]
        if deliveries[-1].settled == ["ack-multiple"] and not any(
            d.settled for d in deliveries[:-1]
        ):
            return  # one ack for the whole batch
        for delivery in deliveries:
            assert len(delivery.settled) == 1, delivery.settled

    harness.loop.run_until_complete(check())


CREATES = {
    "order_svc": "order.place_order.v1",
    "payment_svc": "payment.process_payment.v1",
    "inventory_svc": "inventory.reserve_inventory.v1",
    "saga": "order.order_created.v1",
}


def test_after_the_fuzzing_a_valid_message_is_still_processed(harness: Harness) -> None:
    type_name = CREATES[harness.service]

    async def check() -> None:
        processed = harness.runner.stats.processed
        delivery = await harness.deliver(
            event(type_name, {**VALID[type_name], "order_id": str(uuid.uuid4())}), type_name
        )
        assert delivery.settled == ["ack"]
        assert harness.runner.stats.processed == processed + 1

    harness.loop.run_until_complete(check())
