"""The saga loads a batch's instances in one round trip (``SagaCoordinator.prepare``), and a
later message of the same batch for the same saga sees what the earlier one did."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from contracts import REGISTRY
from contracts.inventory import InventoryReserved
from contracts.payment import PaymentCaptured
from libs.messages import codec
from libs.outbox import Wakeup
from libs.pg.pool import connection, create_pool
from libs.saga import SagaCoordinator, store
from libs.service import MessageRunner
from libs.testing.fakes import FakeDelivery, RecordingDeadLetters
from libs.testing.infra import temporary_database
from saga.domain.order_saga import order_saga
from tests.orders import order_created

pytestmark = pytest.mark.integration
SAGA = order_saga(deadline=30, retries=2)


def delivery(message: object, order_id: str) -> FakeDelivery:
    envelope = REGISTRY.envelope(message, source="/test", subject=order_id)  # type: ignore[arg-type]
    return FakeDelivery(codec.encode(envelope), message_id=envelope.id, type=envelope.type)


async def run(prepare: bool) -> tuple[str, int, list[str]]:
    migrations = [*store.migrations()]
    from libs.inbox import store as inbox
    from libs.outbox import store as outbox

    migrations = [*outbox.migrations(), *inbox.migrations(), *migrations]
    async with temporary_database(prefix="oftest_sagabatch", migrations=migrations) as dsn:
        pool = await create_pool(dsn, max_size=2)
        coordinator = SagaCoordinator(SAGA, registry=REGISTRY, source="/test/saga")
        runner = MessageRunner(
            consumer="saga",
            queue="saga.events",
            source="/test/saga",
            pool=pool,
            registry=REGISTRY,
            handlers=dict.fromkeys(SAGA.replies(), coordinator.handle),
            dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]
            wakeup=Wakeup(None),
            prepare=coordinator.prepare if prepare else None,
        )
        order_id = str(uuid.uuid4())
        created = order_created(order_id)
        await runner.process_batch([delivery(created, order_id)])  # type: ignore[list-item]
        # the payment's reply and the (early) inventory reply in one batch: the second is
        # decided on the state the first left, not on the state loaded before the batch
        captured = PaymentCaptured(order_id=order_id, customer_id="alice", amount=Decimal("5.00"))
        reserved = InventoryReserved(order_id=order_id)
        batch = [delivery(captured, order_id), delivery(reserved, order_id)]
        await runner.process_batch(batch)  # type: ignore[arg-type]
        await pool.close()
        async with connection(dsn) as conn:
            loaded = await store.load_for_update(conn, saga=SAGA.name, saga_id=order_id)
            events = [
                r["event"] for r in await conn.fetch("SELECT event FROM saga_log ORDER BY id")
            ]
            commands = await conn.fetchval("SELECT count(*) FROM outbox")
        assert loaded is not None
        return loaded.state.step or loaded.state.status.value, commands, events


async def test_a_batch_of_replies_for_one_saga_is_decided_in_order_on_one_load() -> None:
    step, commands, events = await run(prepare=True)
    # payment done, inventory done: the saga now awaits the order's approval
    assert step == SAGA.steps[-1].name
    assert "ignored" not in events
    assert commands == 3  # ProcessPayment, ReserveInventory, ApproveOrder


async def test_without_the_batch_load_the_same_batch_ends_the_same_way() -> None:
    assert (await run(prepare=False))[:2] == (await run(prepare=True))[:2]
