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
from libs.inbox import store as inbox
from libs.messages import codec
from libs.messages.registry import Message
from libs.pg.pool import Conn, connect, connection
from libs.service.runner import HandlerContext
from libs.testing.infra import temporary_database
from payment_svc import handlers as payment_handlers

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
