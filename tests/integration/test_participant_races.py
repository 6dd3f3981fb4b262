"""Participants under concurrency (issue #12): the real handlers, real transactions, forced
interleavings.

Each handler runs in its own transaction on its own connection, the way the consumer runner
runs it (inbox claim, handler, outbox rows), and is held open just before its commit. For every
pair of commands of one order that can meet — a charge and its refund, a reservation and its
release, and duplicate copies of each — and for each order of the pair, the first one is held
before commit while the second starts: the second must *block* on the order's lock (asserted in
``pg_stat_activity``) until the first commits. The final state — payment status, balance, ledger,
reservation status, lines, stock, and the events written to the outbox — must then equal what
running the same two commands one after the other gives, and for a fresh order the sequential
rules are also spelled out.

The issue's scenario, kept as an explicit regression test: a RefundPayment running while the
order's first ProcessPayment is uncommitted saw no payment, left a CANCELLED tombstone and
overwrote CAPTURED with it once the charge committed — money taken, never refunded.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

import inventory_svc.bootstrap
import payment_svc.bootstrap
from contracts import REGISTRY
from contracts.inventory import ReleaseInventory, ReserveInventory
from contracts.payment import ProcessPayment, RefundPayment
from contracts.types import Line
from inventory_svc import handlers as inventory_handlers
from inventory_svc.adapters import repository as inventory_repository
from inventory_svc.domain.model import Reservation, ReservationStatus
from libs.errors import ConcurrencyConflict
from libs.inbox import store as inbox
from libs.messages import codec
from libs.messages.registry import Message
from libs.pg.pool import Conn, connect, connection
from libs.service.runner import HandlerContext
from libs.testing.infra import temporary_database
from payment_svc import handlers as payment_handlers
from payment_svc.adapters import repository as payment_repository
from payment_svc.domain.model import Payment, PaymentStatus

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

Handler = Callable[[Any, HandlerContext], Awaitable[None]]
BALANCE = Decimal("100.00")
PRICE = Decimal("30.00")
ON_HAND = 10
BLOCK_TIMEOUT = 5.0


# -- the two services ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Participant:
    """What the tests need to know of one service: its commands, seed and observable state."""

    name: str
    dsn: str
    commands: tuple[str, str]  # (the effect, its compensation)

    def step(self, kind: str, order_id: str, tag: str) -> tuple[Message, Handler]:
        if self.name == "payment_svc":
            if kind == "charge":
                command: Message = ProcessPayment(
                    order_id=order_id, customer_id=f"cust-{tag}", amount=PRICE
                )
                return command, payment_handlers.on_process_payment
            return RefundPayment(order_id=order_id), payment_handlers.on_refund_payment
        if kind == "reserve":
            items = (Line(sku=f"A-{tag}", quantity=2), Line(sku=f"B-{tag}", quantity=1))
            return ReserveInventory(order_id=order_id, items=items), inventory_handlers.on_reserve
        return ReleaseInventory(order_id=order_id), inventory_handlers.on_release

    async def seed(self, conn: Conn, tag: str) -> None:
        if self.name == "payment_svc":
            await conn.execute(
                "INSERT INTO customers VALUES ($1, $1, $2, $2)", f"cust-{tag}", BALANCE
            )
        else:
            await conn.executemany(
                "INSERT INTO stock VALUES ($1, $1, $2, $2)",
                [(f"A-{tag}", ON_HAND), (f"B-{tag}", ON_HAND)],
            )

    async def snapshot(self, conn: Conn, order_id: str, tag: str) -> dict[str, Any]:
        """Everything the order's commands changed, with the order and tag replaced."""
        events = [
            (r["message_type"], _data(bytes(r["payload"])))
            for r in await conn.fetch(
                "SELECT message_type, payload FROM outbox WHERE aggregate_id = $1 ORDER BY id",
                order_id,
            )
        ]
        if self.name == "payment_svc":
            payment = await conn.fetchrow(
                "SELECT status, amount, customer_id, reason FROM payments WHERE order_id = $1",
                order_id,
            )
            state: dict[str, Any] = {
                "payment": dict(payment) if payment else None,
                "balance": await conn.fetchval(
                    "SELECT balance FROM customers WHERE id = $1", f"cust-{tag}"
                ),
                "ledger": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT kind, amount, customer_id FROM ledger WHERE order_id = $1"
                        " ORDER BY id",
                        order_id,
                    )
                ],
                "events": events,
            }
        else:
            reservation = await conn.fetchrow(
                "SELECT status, reason FROM reservations WHERE order_id = $1", order_id
            )
            state = {
                "reservation": dict(reservation) if reservation else None,
                "lines": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1"
                        " ORDER BY sku",
                        order_id,
                    )
                ],
                "stock": [
                    tuple(r)
                    for r in await conn.fetch(
                        "SELECT sku, on_hand FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku",
                        [f"A-{tag}", f"B-{tag}"],
                    )
                ],
                "events": events,
            }
        return _normalise(state, {order_id: "<order>", tag: "<tag>"})


def _data(payload: bytes) -> dict[str, Any]:
    envelope = codec.decode(payload, content_type=None, max_bytes=10**6)
    return {"data": envelope.data, "causation": envelope.causationid}


def _normalise(value: Any, names: dict[str, str]) -> Any:
    text = json.dumps(value, default=str, sort_keys=True)
    for name, placeholder in names.items():
        text = text.replace(name, placeholder)
    return json.loads(text)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def payment() -> AsyncIterator[Participant]:
    async with temporary_database(
        prefix="ofrace", migrations=payment_svc.bootstrap.migrations()
    ) as dsn:
        yield Participant("payment_svc", dsn, ("charge", "refund"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def inventory() -> AsyncIterator[Participant]:
    async with temporary_database(
        prefix="ofrace", migrations=inventory_svc.bootstrap.migrations()
    ) as dsn:
        yield Participant("inventory_svc", dsn, ("reserve", "release"))


# -- one handler in its own transaction, held open before commit -----------------------------------
@dataclass
class Held:
    """A command handled as the runner does it, on a connection of its own; it commits only when
    ``release`` is set (``ready`` says it got there)."""

    participant: Participant
    command: Message
    handler: Handler
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    pid: int = 0
    message_id: str = ""
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        conn = await connect(self.participant.dsn, application_name="orderflow-race-test")
        self.pid = conn.get_server_pid()
        self.task = asyncio.create_task(self._run(conn))

    async def _run(self, conn: Conn) -> None:
        try:
            async with conn.transaction():
                envelope = REGISTRY.envelope(
                    self.command, source="/test/races", subject=self.command.order_id
                )
                self.message_id = envelope.id
                ctx = HandlerContext(
                    conn=conn,
                    envelope=envelope,
                    registry=REGISTRY,
                    source=f"/orderflow/{self.participant.name}",
                )
                assert await inbox.claim(
                    conn,
                    consumer=self.participant.name,
                    message_id=envelope.id,
                    message_type=envelope.type,
                )
                await self.handler(self.command, ctx)
                ctx.write_collected()
                await ctx.outbox.flush(conn)
                self.ready.set()
                await self.release.wait()
        finally:
            await conn.close()

    async def until_ready(self) -> None:
        assert self.task is not None
        waiter = asyncio.create_task(self.ready.wait())
        await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.task.done():
            self.task.result()  # the handler failed: raise its error

    async def finish(self) -> None:
        assert self.task is not None
        self.release.set()
        await self.task


async def wait_state(observer: Conn, held: Held) -> str | None:
    """Until ``held`` blocks on a lock (its wait event, e.g. ``advisory``) or reaches its commit
    without blocking (None); raises if its handler fails or neither happens in time."""
    assert held.task is not None
    deadline = time.monotonic() + BLOCK_TIMEOUT
    while time.monotonic() < deadline:
        if held.task.done():
            held.task.result()
        if held.ready.is_set():
            return None
        row = await observer.fetchrow(
            "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = $1", held.pid
        )
        if row is not None and row["wait_event_type"] == "Lock":
            return str(row["wait_event"])
        await asyncio.sleep(0.005)
    raise AssertionError("the second transaction neither blocked nor reached its commit")


async def race(participant: Participant, order_id: str, tag: str, first: str, second: str) -> str:
    """``first`` holds its transaction open before commit while ``second`` starts; returns what
    ``second`` waited for."""
    a = Held(participant, *participant.step(first, order_id, tag))
    b = Held(participant, *participant.step(second, order_id, tag))
    observer = await connect(participant.dsn)
    try:
        await a.start()
        await a.until_ready()
        await b.start()
        waited = await wait_state(observer, b)
        # every participant handler takes its order's lock before anything else
        assert waited == "advisory", f"the second command waited for {waited}, not the lock"
        await a.finish()
        await b.finish()
    finally:
        for held in (a, b):
            if held.task is not None and not held.task.done():
                held.release.set()
                await asyncio.gather(held.task, return_exceptions=True)
        await observer.close()
    return waited or "nothing"


async def sequentially(participant: Participant, order_id: str, tag: str, kinds: list[str]) -> None:
    """Each command in its own committed transaction, one after the other."""
    for kind in kinds:
        held = Held(participant, *participant.step(kind, order_id, tag))
        held.release.set()
        await held.start()
        assert held.task is not None
        await held.task


async def fresh(participant: Participant) -> tuple[str, str]:
    """A new order id and a seeded customer or pair of SKUs of its own."""
    tag = uuid.uuid4().hex[:10].upper()
    async with connection(participant.dsn) as conn:
        await participant.seed(conn, tag)
    return str(uuid.uuid4()), tag


async def state_of(participant: Participant, order_id: str, tag: str) -> dict[str, Any]:
    async with connection(participant.dsn) as conn:
        return await participant.snapshot(conn, order_id, tag)


def without_causation(state: dict[str, Any]) -> dict[str, Any]:
    """Message ids differ between two runs of the same commands; their effects must not."""
    return {
        **state,
        "events": [(t, {"data": e["data"]}) for t, e in state["events"]],
    }


# -- every interleaving of every pair that can meet ----------------------------------------------
PAIRS = [
    ("effect", "compensation"),
    ("compensation", "effect"),
    ("effect", "effect"),
    ("compensation", "compensation"),
]
HISTORIES = [[], ["effect"], ["compensation"]]


def _kinds(participant: Participant, roles: list[str]) -> list[str]:
    effect, compensation = participant.commands
    return [effect if r == "effect" else compensation for r in roles]


@pytest.mark.parametrize("service", ["payment", "inventory"])
@pytest.mark.parametrize("history", HISTORIES, ids=["fresh", "after-effect", "after-compensation"])
@pytest.mark.parametrize(
    "pair", PAIRS, ids=lambda p: "-then-".join(p) if isinstance(p, tuple) else p
)
async def test_two_commands_of_one_order_serialise_and_end_as_if_run_one_after_the_other(
    service: str,
    history: list[str],
    pair: tuple[str, str],
    payment: Participant,
    inventory: Participant,
) -> None:
    participant = payment if service == "payment" else inventory
    first, second = _kinds(participant, list(pair))
    before = _kinds(participant, history)

    order_id, tag = await fresh(participant)
    await sequentially(participant, order_id, tag, before)
    waited = await race(participant, order_id, tag, first, second)
    raced = await state_of(participant, order_id, tag)

    oracle_order, oracle_tag = await fresh(participant)
    await sequentially(participant, oracle_order, oracle_tag, [*before, first, second])
    expected = await state_of(participant, oracle_order, oracle_tag)

    assert without_causation(raced) == without_causation(expected)
    assert waited == "advisory", f"the second command waited for {waited}, not the order's lock"


# -- the sequential rules, spelled out for a fresh order ----------------------------------------
def _payment_row(status: str, amount: str, customer: str | None, reason: str | None) -> Any:
    return {"status": status, "amount": amount, "customer_id": customer, "reason": reason}


CAPTURED = (
    "payment.payment_captured.v1",
    {"data": {"order_id": "<order>", "customer_id": "cust-<tag>", "amount": "30.00"}},
)


def refunded(amount: str) -> Any:
    return ("payment.payment_refunded.v1", {"data": {"order_id": "<order>", "amount": amount}})


EXPECTED_PAYMENTS = {
    ("charge", "refund"): {
        "payment": _payment_row("REFUNDED", "30.00", "cust-<tag>", None),
        "balance": "100.00",
        "ledger": [["charge", "30.00", "cust-<tag>"], ["refund", "30.00", "cust-<tag>"]],
        "events": [CAPTURED, refunded("30.00")],
    },
    ("refund", "charge"): {
        "payment": _payment_row("CANCELLED", "0.00", None, "refunded before charge"),
        "balance": "100.00",
        "ledger": [],
        "events": [
            refunded("0.00"),
            (
                "payment.payment_declined.v1",
                {
                    "data": {
                        "order_id": "<order>",
                        "reason": "payment for this order was cancelled before it was charged",
                    }
                },
            ),
        ],
    },
    ("charge", "charge"): {
        "payment": _payment_row("CAPTURED", "30.00", "cust-<tag>", None),
        "balance": "70.00",
        "ledger": [["charge", "30.00", "cust-<tag>"]],
        "events": [CAPTURED, CAPTURED],
    },
    ("refund", "refund"): {
        "payment": _payment_row("CANCELLED", "0.00", None, "refunded before charge"),
        "balance": "100.00",
        "ledger": [],
        "events": [refunded("0.00"), refunded("0.00")],
    },
}

RESERVED = ("inventory.inventory_reserved.v1", {"data": {"order_id": "<order>"}})
RELEASED = ("inventory.inventory_released.v1", {"data": {"order_id": "<order>"}})
LINES = [["A-<tag>", 2], ["B-<tag>", 1]]
EXPECTED_RESERVATIONS = {
    ("reserve", "release"): {
        "reservation": {"status": "RELEASED", "reason": None},
        "lines": LINES,
        "stock": [["A-<tag>", 10], ["B-<tag>", 10]],
        "events": [RESERVED, RELEASED],
    },
    ("release", "reserve"): {
        "reservation": {"status": "CANCELLED", "reason": None},
        "lines": [],
        "stock": [["A-<tag>", 10], ["B-<tag>", 10]],
        "events": [
            RELEASED,
            (
                "inventory.inventory_reservation_failed.v1",
                {
                    "data": {
                        "order_id": "<order>",
                        "reason": "reservation was cancelled before it was made",
                    }
                },
            ),
        ],
    },
    ("reserve", "reserve"): {
        "reservation": {"status": "RESERVED", "reason": None},
        "lines": LINES,
        "stock": [["A-<tag>", 8], ["B-<tag>", 9]],
        "events": [RESERVED, RESERVED],
    },
    ("release", "release"): {
        "reservation": {"status": "CANCELLED", "reason": None},
        "lines": [],
        "stock": [["A-<tag>", 10], ["B-<tag>", 10]],
        "events": [RELEASED, RELEASED],
    },
}


@pytest.mark.parametrize("pair", list(EXPECTED_PAYMENTS), ids="-then-".join)
async def test_payment_races_on_a_fresh_order_end_as_the_rules_say(
    payment: Participant, pair: tuple[str, str]
) -> None:
    order_id, tag = await fresh(payment)
    await race(payment, order_id, tag, *pair)
    assert without_causation(await state_of(payment, order_id, tag)) == EXPECTED_PAYMENTS[pair]


@pytest.mark.parametrize("pair", list(EXPECTED_RESERVATIONS), ids="-then-".join)
async def test_inventory_races_on_a_fresh_order_end_as_the_rules_say(
    inventory: Participant, pair: tuple[str, str]
) -> None:
    order_id, tag = await fresh(inventory)
    await race(inventory, order_id, tag, *pair)
    got = without_causation(await state_of(inventory, order_id, tag))
    assert got == EXPECTED_RESERVATIONS[pair]


async def test_issue_12_a_refund_racing_the_first_charge_gives_the_money_back(
    payment: Participant,
) -> None:
    """The issue's scenario exactly: ProcessPayment is uncommitted (customer charged, CAPTURED
    row written) when RefundPayment for the same order starts. Before the fix the refund saw no
    row, chose the CANCELLED tombstone and overwrote CAPTURED once the charge committed: balance
    70.00, one charge in the ledger, no refund — money taken, never refunded."""
    order_id, tag = await fresh(payment)
    await race(payment, order_id, tag, "charge", "refund")
    state = await state_of(payment, order_id, tag)
    assert state["payment"]["status"] == "REFUNDED"
    assert state["balance"] == "100.00"
    assert [kind for kind, _, _ in state["ledger"]] == ["charge", "refund"]
    assert [t for t, _ in state["events"]] == [
        "payment.payment_captured.v1",
        "payment.payment_refunded.v1",
    ]


async def test_issue_12_a_release_racing_the_first_reservation_gives_the_stock_back(
    inventory: Participant,
) -> None:
    order_id, tag = await fresh(inventory)
    await race(inventory, order_id, tag, "reserve", "release")
    state = await state_of(inventory, order_id, tag)
    assert state["reservation"]["status"] == "RELEASED"
    assert state["stock"] == [["A-<tag>", 10], ["B-<tag>", 10]]


# -- many at once, in no chosen order ---------------------------------------------------------
@pytest.mark.parametrize("service", ["payment", "inventory"])
async def test_commands_fired_all_at_once_end_as_their_serial_order_says(
    service: str, payment: Participant, inventory: Participant
) -> None:
    """Four commands per order (two of each kind), all started together on connections of their
    own and committing at once; the order they took the lock in is read back from the outbox
    (rows are written under the lock) and replayed one by one on a fresh order: same result."""
    participant = payment if service == "payment" else inventory
    rng = random.Random(12)
    for _ in range(8):
        order_id, tag = await fresh(participant)
        kinds = list(participant.commands) * 2
        rng.shuffle(kinds)
        runs = [Held(participant, *participant.step(k, order_id, tag)) for k in kinds]
        await asyncio.gather(*(held.start() for held in runs))
        observer = await connect(participant.dsn)
        try:  # one holds the order's lock before its commit; every other one waits for it
            ready = [asyncio.create_task(held.ready.wait()) for held in runs]
            await asyncio.wait(ready, timeout=BLOCK_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            for task in ready:
                task.cancel()
            holders = [held for held in runs if held.ready.is_set()]
            assert len(holders) == 1, f"{len(holders)} commands passed the order's lock at once"
            waits = [await wait_state(observer, h) for h in runs if h is not holders[0]]
            assert waits == ["advisory"] * (len(runs) - 1), waits
        finally:
            await observer.close()
            for held in runs:
                held.release.set()
        await asyncio.gather(*(held.task for held in runs if held.task is not None))
        raced = await state_of(participant, order_id, tag)
        by_message = {held.message_id: kind for held, kind in zip(runs, kinds, strict=True)}
        serial = [by_message[e["causation"]] for _, e in raced["events"]]
        assert sorted(serial) == sorted(kinds)

        oracle_order, oracle_tag = await fresh(participant)
        await sequentially(participant, oracle_order, oracle_tag, serial)
        expected = await state_of(participant, oracle_order, oracle_tag)
        assert without_causation(raced) == without_causation(expected)


# -- batches: no lock-order deadlock -------------------------------------------------------------
async def test_a_transaction_holding_one_order_does_not_wait_for_another_it_would_deadlock_on(
    payment: Participant,
) -> None:
    """Two batch transactions: T1 handles order X then Y, T2 handles Y then X. Waiting for each
    other would be a deadlock (found only after ``deadlock_timeout``); instead each, already
    holding one order, finds the other busy and gets a ConcurrencyConflict at once — the runner
    rolls the batch back and handles its messages one per transaction, where a transaction holds
    a single order lock and may wait for it."""
    x, _ = await fresh(payment)
    y = str(uuid.uuid4())
    t1, t2 = await connect(payment.dsn), await connect(payment.dsn)
    try:
        tx1, tx2 = t1.transaction(), t2.transaction()
        await tx1.start()
        await tx2.start()
        await payment_repository.lock_order(t1, x)
        await payment_repository.lock_order(t2, y)
        started = time.monotonic()
        with pytest.raises(ConcurrencyConflict, match="not waiting"):
            await payment_repository.lock_order(t1, y)
        with pytest.raises(ConcurrencyConflict, match="not waiting"):
            await payment_repository.lock_order(t2, x)
        assert time.monotonic() - started < 0.9  # no deadlock_timeout wait (1 s by default)
        await tx1.rollback()
        await tx2.rollback()

        # one message per transaction: the only lock it holds is the one it waits for
        tx2 = t2.transaction()
        await tx2.start()
        await payment_repository.lock_order(t2, y)
        async with t1.transaction():
            waiting = asyncio.create_task(payment_repository.lock_order(t1, y))
            observer = await connect(payment.dsn)
            try:  # it waits for the lock instead of failing
                deadline = time.monotonic() + BLOCK_TIMEOUT
                while not await observer.fetchval(
                    "SELECT wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $1",
                    t1.get_server_pid(),
                ):
                    assert not waiting.done() and time.monotonic() < deadline
                    await asyncio.sleep(0.005)
            finally:
                await observer.close()
            await tx2.commit()
            await asyncio.wait_for(waiting, 3)
            # one order twice in one batch is fine: the lock is re-entrant in a transaction
            await payment_repository.lock_order(t1, y)
    finally:
        await t1.close()
        await t2.close()


async def test_the_lock_keys_are_stable_and_shared_by_every_spelling_of_an_order() -> None:
    order = "5d3c6a55-2b7e-4a8f-9a43-2f0e4b1c9d10"
    key = payment_repository.ORDER_LOCK.key(order)
    assert key == payment_repository.ORDER_LOCK.key(order.upper())
    assert key == inventory_repository.ORDER_LOCK.key(order)
    assert -(2**31) <= key < 2**31
    assert key == -505155528  # fixed forever: replicas of different versions must agree
    assert payment_repository.ORDER_LOCK.class_id != inventory_repository.ORDER_LOCK.class_id
    assert 0 < payment_repository.ORDER_LOCK.class_id < 2**31


# -- the conditional write: defence in depth ---------------------------------------------------
async def test_a_tombstone_is_never_written_over_a_capture_even_by_a_buggy_caller(
    payment: Participant,
) -> None:
    order_id, tag = await fresh(payment)
    await sequentially(payment, order_id, tag, ["charge"])
    before = await state_of(payment, order_id, tag)
    async with connection(payment.dsn) as conn:
        tombstone = Payment(
            order_id=order_id,
            customer_id=None,
            amount=Decimal("0.00"),
            status=PaymentStatus.CANCELLED,
            reason="refunded before charge",
        )
        with pytest.raises(payment_repository.PaymentOverwriteRefused):
            async with conn.transaction():
                await payment_repository.save(conn, tombstone, customer=None, before=None)
        # nor a second capture over a refund, with money moving
        await sequentially(payment, order_id, tag, ["refund"])
        _, customer = await payment_repository.load(conn, order_id, customer_id=f"cust-{tag}")
        assert customer is not None
        customer.balance -= PRICE
        recharge = Payment(
            order_id=order_id,
            customer_id=customer.id,
            amount=PRICE,
            status=PaymentStatus.CAPTURED,
        )
        with pytest.raises(payment_repository.PaymentOverwriteRefused):
            async with conn.transaction():
                await payment_repository.save(conn, recharge, customer=customer, before=None)
    after = await state_of(payment, order_id, tag)
    assert before["payment"]["status"] == "CAPTURED"
    assert after["payment"]["status"] == "REFUNDED" and after["balance"] == "100.00"


async def test_a_reservation_is_never_overwritten_by_a_tombstone_even_by_a_buggy_caller(
    inventory: Participant,
) -> None:
    order_id, tag = await fresh(inventory)
    await sequentially(inventory, order_id, tag, ["reserve"])
    async with connection(inventory.dsn) as conn:
        tombstone = Reservation(order_id=order_id, lines=(), status=ReservationStatus.CANCELLED)
        with pytest.raises(inventory_repository.ReservationOverwriteRefused):
            async with conn.transaction():
                await inventory_repository.save(conn, tombstone, stock={}, is_new=True)
    state = await state_of(inventory, order_id, tag)
    assert state["reservation"]["status"] == "RESERVED"
    assert state["stock"] == [["A-<tag>", 8], ["B-<tag>", 9]]
