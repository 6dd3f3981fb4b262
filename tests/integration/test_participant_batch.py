"""payment_svc and inventory_svc lock and load a whole batch at once (their ``prepare``).

A batch of commands is handled by the real consumer runner against a real database, in one
transaction, and must end exactly as the same commands handled one per transaction: a later
command of the batch sees what an earlier one did to the same order, the same customer, the same
SKU — not what was loaded before the batch. And it must cost what the batch load promises: the
orders' locks in one statement and the reads in one more, not three statements per command.
A busy order in a batch is never waited for while the batch holds others: the batch falls back
to one command per transaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

import inventory_svc.bootstrap
import payment_svc.bootstrap
from contracts import REGISTRY
from contracts.inventory import ReleaseInventory, ReserveInventory
from contracts.payment import ProcessPayment, RefundPayment
from contracts.types import Line
from inventory_svc import handlers as inventory_handlers
from inventory_svc.adapters import repository as inventory_repository
from libs.errors import ConcurrencyConflict
from libs.inbox import store as inbox
from libs.messages import codec
from libs.messages.registry import Message
from libs.outbox import Wakeup
from libs.outbox import store as outbox
from libs.pg.pool import connect, connection, create_pool
from libs.service import MessageRunner
from libs.testing.fakes import FakeDelivery, RecordingDeadLetters
from libs.testing.infra import temporary_database
from libs.testing.waiting import wait_until
from payment_svc import handlers as payment_handlers
from payment_svc.adapters import repository as payment_repository

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass(frozen=True)
class Service:
    consumer: str
    migrations: Callable[[], list[Any]]
    handlers: dict[type, Any]
    prepare: Any
    seed: str
    state: dict[str, str]


PAYMENT = Service(
    consumer="payment_svc",
    migrations=payment_svc.bootstrap.migrations,
    handlers=payment_handlers.HANDLERS,
    prepare=payment_handlers.prepare,
    seed="INSERT INTO customers VALUES ('carol', 'carol', 50, 50), ('dave', 'dave', 100, 100)",
    state={
        "payments": "SELECT order_id, customer_id, amount, status, reason FROM payments"
        " ORDER BY order_id",
        "customers": "SELECT id, balance FROM customers ORDER BY id",
        "ledger": "SELECT order_id, customer_id, kind, amount FROM ledger ORDER BY order_id, kind",
        "events": "SELECT aggregate_id, message_type FROM outbox ORDER BY id",
    },
)
INVENTORY = Service(
    consumer="inventory_svc",
    migrations=inventory_svc.bootstrap.migrations,
    handlers=inventory_handlers.HANDLERS,
    prepare=inventory_handlers.prepare,
    seed="INSERT INTO stock VALUES ('BOLT', 'bolt', 10, 10), ('NUT', 'nut', 10, 10)",
    state={
        "reservations": "SELECT order_id, status, reason FROM reservations ORDER BY order_id",
        "lines": "SELECT order_id, sku, quantity FROM reservation_lines ORDER BY order_id, sku",
        "stock": "SELECT sku, on_hand FROM stock ORDER BY sku",
        "events": "SELECT aggregate_id, message_type FROM outbox ORDER BY id",
    },
)
A, B, C, D, E = (str(uuid.UUID(int=n)) for n in (0xA, 0xB, 0xC, 0xD, 0xE))


def delivery(message: Message) -> FakeDelivery:
    envelope = REGISTRY.envelope(message, source="/test", subject=message.order_id)  # type: ignore[attr-defined]
    return FakeDelivery(codec.encode(envelope), message_id=envelope.id, type=envelope.type)


class Counted:
    """The statements sent on the runner's only pooled connection for the last batch (the
    first use of a statement also sends asyncpg's type introspection)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, record: Any) -> None:
        self.statements.append(record.query)


@pytest.fixture
async def database(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Service, str]]:
    service: Service = request.param
    migrations = [*outbox.migrations(), *inbox.migrations(), *service.migrations()]
    async with temporary_database(prefix="oftest_ptbatch", migrations=migrations) as dsn:
        async with connection(dsn) as conn:
            await conn.execute(service.seed)
        yield service, dsn


async def handle(
    service: Service, dsn: str, batches: Sequence[Sequence[Message]], *, prepare: bool
) -> tuple[dict[str, list[tuple[Any, ...]]], Counted]:
    """Each batch through the runner (one transaction per batch when it can), then the state."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    counted = Counted()
    async with pool.acquire() as conn:
        conn.add_query_logger(counted)
    runner = MessageRunner(
        consumer=service.consumer,
        queue=f"{service.consumer}.commands",
        source=f"/test/{service.consumer}",
        pool=pool,
        registry=REGISTRY,
        handlers=service.handlers,
        dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]
        wakeup=Wakeup(None),
        prepare=service.prepare if prepare else None,
    )
    try:
        for batch in batches:
            counted.statements.clear()
            deliveries = [delivery(m) for m in batch]
            await runner.process_batch(deliveries)  # type: ignore[arg-type]
            settled = [s for d in deliveries for s in d.settled]
            assert deliveries[-1].processed and set(settled) <= {"ack", "ack-multiple"}
        assert runner.stats.dead_lettered == 0
    finally:
        await pool.close()
    async with connection(dsn) as conn:
        state = {
            name: [tuple(r) for r in await conn.fetch(query)]
            for name, query in service.state.items()
        }
    return state, counted


def payment_batches() -> list[list[Message]]:
    """A first batch prepares the statements. Then carol has 50: A's 30 is taken, B's 30 then
    declined (the balance A left), A refunded, A charged again (answered from the refund), C on
    dave."""
    warm_up: list[Message] = [
        ProcessPayment(order_id=D, customer_id="dave", amount=Decimal("1.00")),
        RefundPayment(order_id=E),
    ]
    return [
        warm_up,
        [
            ProcessPayment(order_id=A, customer_id="carol", amount=Decimal("30.00")),
            ProcessPayment(order_id=B, customer_id="carol", amount=Decimal("30.00")),
            RefundPayment(order_id=A),
            ProcessPayment(order_id=A, customer_id="carol", amount=Decimal("30.00")),
            ProcessPayment(order_id=C, customer_id="dave", amount=Decimal("5.00")),
        ],
    ]


def inventory_batches() -> list[list[Message]]:
    """A first batch prepares the statements. Then, 10 BOLTs: A takes 6, B's 6 are then short, A
    gives its 6 back, C takes 9 and a NUT, A's release again is answered from the release."""
    warm_up: list[Message] = [
        ReserveInventory(order_id=D, items=(Line(sku="NUT", quantity=1),)),
        ReleaseInventory(order_id=E),
    ]
    return [
        warm_up,
        [
            ReserveInventory(order_id=A, items=(Line(sku="BOLT", quantity=6),)),
            ReserveInventory(order_id=B, items=(Line(sku="BOLT", quantity=6),)),
            ReleaseInventory(order_id=A),
            ReserveInventory(
                order_id=C, items=(Line(sku="BOLT", quantity=9), Line(sku="NUT", quantity=1))
            ),
            ReleaseInventory(order_id=A),
        ],
    ]


CASES = [(PAYMENT, payment_batches), (INVENTORY, inventory_batches)]


@pytest.mark.parametrize(
    ("database", "batches"), CASES, indirect=["database"], ids=["payment", "inventory"]
)
async def test_a_batch_ends_as_its_commands_one_per_transaction_and_costs_two_reads(
    database: tuple[Service, str], batches: Callable[[], list[list[Message]]]
) -> None:
    service, dsn = database
    together, counted = await handle(service, dsn, batches(), prepare=True)
    async with temporary_database(
        prefix="oftest_ptbatch",
        migrations=[*outbox.migrations(), *inbox.migrations(), *service.migrations()],
    ) as other:
        async with connection(other) as conn:
            await conn.execute(service.seed)
        alone, _ = await handle(service, other, [[m] for b in batches() for m in b], prepare=False)
    assert together == alone
    if service is PAYMENT:
        assert together["customers"] == [("carol", Decimal("50.00")), ("dave", Decimal("94.00"))]
        assert [row[3] for row in together["payments"]] == [
            *("REFUNDED", "DECLINED", "CAPTURED", "CAPTURED", "CANCELLED")
        ]
    else:
        assert together["stock"] == [("BOLT", 1), ("NUT", 8)]
        assert [row[1] for row in together["reservations"]] == [
            *("RELEASED", "FAILED", "RESERVED", "RESERVED", "CANCELLED")
        ]
    # BEGIN, the inbox claim, the orders' locks, the batch's reads, one write per command,
    # the outbox rows, COMMIT: no fallback, no per-command lock or read (then the wake-up)
    transaction = counted.statements[: counted.statements.index("COMMIT;") + 1]
    assert len(transaction) == 6 + len(batches()[-1]), [
        " ".join(q.split()[:6]) for q in transaction
    ]


@pytest.mark.parametrize("database", [PAYMENT], indirect=True, ids=["payment"])
async def test_a_busy_order_sends_the_batch_to_one_command_per_transaction(
    database: tuple[Service, str],
) -> None:
    """Another transaction holds B: the batch (A, B) does not wait holding A — its lock
    statement fails at once, the runner handles A and B alone, and B waits for its lock there
    until the holder commits."""
    service, dsn = database
    holder = await connect(dsn)
    try:
        tx = holder.transaction()
        await tx.start()
        await payment_repository.lock_order(holder, B)
        conn = await connect(dsn)
        try:
            async with conn.transaction():
                started = time.monotonic()
                with pytest.raises(ConcurrencyConflict, match="1 of 2 orders"):
                    await payment_repository.ORDER_LOCK.take_all(conn, [A, B])
                assert time.monotonic() - started < 0.9  # not deadlock_timeout
        finally:
            await conn.close()
        batch = [
            ProcessPayment(order_id=A, customer_id="carol", amount=Decimal("30.00")),
            ProcessPayment(order_id=B, customer_id="dave", amount=Decimal("30.00")),
        ]
        handled = asyncio.create_task(handle(service, dsn, [batch], prepare=True))
        # A, alone now, commits while B waits for the holder
        async with connection(dsn) as observer:
            deadline = time.monotonic() + 10
            while await observer.fetchval("SELECT count(*) FROM payments") == 0:
                assert time.monotonic() < deadline and not handled.done()
                await asyncio.sleep(0.01)
            assert [
                tuple(r) for r in await observer.fetch("SELECT order_id::text FROM payments")
            ] == [(A,)]
            advisory = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
            # B goes on to wait for the holder's lock
            await wait_until(lambda: observer.fetchval(advisory), timeout=10, interval=0.05)
            assert await observer.fetchval(advisory) == 1
            assert not handled.done()
        await tx.commit()
        state, counted = await asyncio.wait_for(handled, 10)
    finally:
        await holder.close()
    assert [row[3] for row in state["payments"]] == ["CAPTURED", "CAPTURED"]
    assert any("pg_try_advisory_xact_lock($1, k)" in s for s in counted.statements)


async def test_a_reserved_order_released_in_the_next_batch_gives_back_its_own_stock() -> None:
    """The lines and stock of a reservation committed earlier are loaded by the batch read."""
    migrations = [*outbox.migrations(), *inbox.migrations(), *INVENTORY.migrations()]
    async with temporary_database(prefix="oftest_ptbatch", migrations=migrations) as dsn:
        async with connection(dsn) as conn:
            await conn.execute(INVENTORY.seed)
        first = [
            ReserveInventory(
                order_id=A, items=(Line(sku="BOLT", quantity=4), Line(sku="NUT", quantity=3))
            ),
            ReserveInventory(order_id=B, items=(Line(sku="NUT", quantity=2),)),
        ]
        second = [ReleaseInventory(order_id=A), ReleaseInventory(order_id=C)]
        state, _ = await handle(INVENTORY, dsn, [first, second], prepare=True)
        assert state["stock"] == [("BOLT", 10), ("NUT", 8)]
        assert [row[1] for row in state["reservations"]] == ["RELEASED", "RESERVED", "CANCELLED"]
        async with connection(dsn) as conn:
            shared: dict[str, Any] = {}
            async with conn.transaction():
                # B reserved again (with a BOLT) and C released: B has its reservation and C
                # has none, so no stock row is locked
                await inventory_repository.load_batch(conn, shared, [B, C], [(B, "BOLT")], [C])
                batch: inventory_repository.Batch = shared[inventory_repository.BATCH]
                assert await _stock_locked_by_others(dsn) == 0
            assert batch.looked_up == set()
            assert batch.reservations[C] is not None  # the tombstone
            reservation_b = batch.reservations[B]
            assert reservation_b is not None and reservation_b.lines == (("NUT", 2),)
            async with conn.transaction():  # B released: what B's reservation holds, only
                await inventory_repository.load_batch(conn, shared, [B, A], [], [B, A])
                batch = shared[inventory_repository.BATCH]
                assert await _stock_locked_by_others(dsn) == 1
            assert batch.looked_up == {"NUT"}


@pytest.mark.parametrize("database", [PAYMENT], indirect=True, ids=["payment"])
async def test_a_refund_in_a_batch_finds_the_customer_of_an_earlier_charge(
    database: tuple[Service, str],
) -> None:
    """The refund names no customer: the batch load finds it through the payment."""
    service, dsn = database
    charge = ProcessPayment(order_id=A, customer_id="carol", amount=Decimal("30.00"))
    later = [RefundPayment(order_id=A), ProcessPayment(order_id=B, customer_id="dave", amount=1)]
    state, counted = await handle(service, dsn, [[charge], later], prepare=True)
    assert [row[3] for row in state["payments"]] == ["REFUNDED", "CAPTURED"]
    assert state["customers"] == [("carol", Decimal("50.00")), ("dave", Decimal("99.00"))]
    assert [row[2] for row in state["ledger"]] == ["charge", "refund", "charge"]
    assert not any("pg_try_advisory_xact_lock($1, $2)" in q for q in counted.statements)


async def _stock_locked_by_others(dsn: str) -> int:
    """How many stock rows another transaction holds locked: what this one cannot lock."""
    async with connection(dsn) as conn, conn.transaction():
        free = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM stock FOR UPDATE SKIP LOCKED) AS f"
        )
        return int(await conn.fetchval("SELECT count(*) FROM stock")) - int(free)


@pytest.mark.parametrize("database", [PAYMENT], indirect=True, ids=["payment"])
async def test_two_replicas_batching_the_same_orders_and_customers_keep_the_money_right(
    database: tuple[Service, str],
) -> None:
    """Two runners on one database, each with its own pool, handle batches at once: the charges
    of 48 orders of four customers on one, their refunds (every other order) and redelivered
    copies of charges on the other, in different orders. Whatever interleaving happens, each
    order ends with a consistent payment and ledger, each balance is its opening balance minus
    what its ledger says, and nothing is dead-lettered."""
    service, dsn = database
    customers = [f"cust-{n}" for n in range(4)]
    async with connection(dsn) as conn:
        await conn.executemany(
            "INSERT INTO customers VALUES ($1, $1, 1000, 1000)", [(c,) for c in customers]
        )
    orders = [str(uuid.uuid4()) for _ in range(48)]
    charges = [
        delivery(ProcessPayment(order_id=o, customer_id=customers[n % 4], amount=Decimal("7")))
        for n, o in enumerate(orders)
    ]
    refunds = [delivery(RefundPayment(order_id=o)) for o in orders[::2]]
    again = [
        FakeDelivery(d.body, message_id=d.message_id, type=d.type) for d in charges[::3]
    ]  # the same messages, redelivered to the other replica
    one = [charges[i : i + 8] for i in range(0, len(charges), 8)]
    mixed = [*refunds[::-1], *again]
    other = [mixed[i : i + 6] for i in range(0, len(mixed), 6)]

    async def replica(batches: list[list[FakeDelivery]]) -> MessageRunner:
        pool = await create_pool(dsn, min_size=1, max_size=1)
        runner = MessageRunner(
            consumer=service.consumer,
            queue="payment.commands",
            source="/test/payment_svc",
            pool=pool,
            registry=REGISTRY,
            handlers=service.handlers,
            dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]
            wakeup=Wakeup(None),
            prepare=service.prepare,
        )
        try:
            for batch in batches:
                await runner.process_batch(batch)  # type: ignore[arg-type]
        finally:
            await pool.close()
        return runner

    runners = await asyncio.gather(replica(one), replica(other))
    assert [r.stats.dead_lettered for r in runners] == [0, 0]
    for d in [*charges, *refunds, *again]:
        assert set(d.settled) <= {"ack", "ack-multiple"}
    async with connection(dsn) as conn:
        payments = {
            r["order_id"]: r["status"]
            for r in await conn.fetch("SELECT order_id::text, status FROM payments")
        }
        ledger = await conn.fetch("SELECT order_id::text, customer_id, kind, amount FROM ledger")
        balances = dict(await conn.fetch("SELECT id, balance FROM customers"))
    kinds: dict[str, list[str]] = {}
    for row in ledger:
        kinds.setdefault(row["order_id"], []).append(row["kind"])
    for n, order in enumerate(orders):
        refunded = n % 2 == 0
        expected = {
            "CAPTURED": ["charge"],
            "REFUNDED": ["charge", "refund"],
            "CANCELLED": [],  # the refund came first: a tombstone, never charged
        }
        status = payments[order]
        assert status in (("REFUNDED", "CANCELLED") if refunded else ("CAPTURED",)), status
        assert sorted(kinds.get(order, [])) == expected[status]
    for customer in customers:
        moved = sum(
            r["amount"] if r["kind"] == "refund" else -r["amount"]
            for r in ledger
            if r["customer_id"] == customer
        )
        assert balances[customer] == 1000 + moved
