"""Payment and inventory races on a fresh order end as the sequential rules say."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from inventory_svc.adapters import repository as inventory_repository
from inventory_svc.domain.model import Reservation, ReservationStatus
from libs.errors import ConcurrencyConflict
from libs.pg.pool import connect, connection
from payment_svc.adapters import repository as payment_repository
from payment_svc.domain.model import Payment, PaymentStatus

from .test_participant_races import (
    BLOCK_TIMEOUT,
    PRICE,
    Held,
    Participant,
    fresh,
    inventory,
    payment,
    race,
    sequentially,
    state_of,
    wait_state,
    without_causation,
)


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
