"""The order saga with the real services as separate processes (issue: the order system)."""

from __future__ import annotations

import signal
from decimal import Decimal

import pytest

from libs.testing.waiting import wait_until

from .conftest import System, running_system

pytestmark = pytest.mark.e2e


async def test_an_order_is_confirmed_charged_and_its_stock_taken(system: System) -> None:
    order_id = await system.place("alice", ("WIDGET", 2, "9.99"), ("GADGET", 1, "24.50"))
    await system.wait([order_id])
    assert system.status(order_id) == "CONFIRMED"
    assert await system.scalar(
        "payment_svc", "SELECT balance FROM customers WHERE id='alice'"
    ) == Decimal("955.52")
    assert (
        await system.scalar("inventory_svc", "SELECT on_hand FROM stock WHERE sku='WIDGET'") == 998
    )
    assert (
        await system.scalar("saga", "SELECT status FROM saga_instance WHERE id=$1", order_id)
        == "COMPLETED"
    )
    await system.quiet_check()


async def test_a_declined_payment_rejects_the_order_without_charging(system: System) -> None:
    order_id = await system.place("bob", ("GADGET", 3, "24.50"))
    await system.wait([order_id])
    assert system.status(order_id) == "REJECTED"
    assert "insufficient funds" in (system.client.outcomes[order_id].reason or "")
    assert await system.scalar(
        "payment_svc", "SELECT balance FROM customers WHERE id='bob'"
    ) == Decimal("25.00")
    assert await system.scalar("payment_svc", "SELECT count(*) FROM ledger") == 0
    assert await system.scalar("inventory_svc", "SELECT count(*) FROM reservations") == 0
    await system.quiet_check()


async def test_an_out_of_stock_order_is_rejected_refunded_and_leaves_stock_unchanged(
    system: System,
) -> None:
    order_id = await system.place("alice", ("GIZMO", 5, "149.00"))
    await system.wait([order_id])
    assert system.status(order_id) == "REJECTED"
    assert "not enough stock for GIZMO" in (system.client.outcomes[order_id].reason or "")
    assert await system.scalar(
        "payment_svc", "SELECT balance FROM customers WHERE id='alice'"
    ) == Decimal("1000.00")
    kinds = await system.scalar(
        "payment_svc", "SELECT string_agg(kind, ',' ORDER BY id) FROM ledger"
    )
    assert kinds == "charge,refund"
    assert await system.scalar("inventory_svc", "SELECT on_hand FROM stock WHERE sku='GIZMO'") == 3
    await system.quiet_check()


async def test_orders_placed_while_payment_is_down_are_pending_and_all_finish_once_it_is_back() -> (
    None
):
    # deadlines long enough that the outage does not turn into compensation
    async with running_system(extra_env={"ORDERFLOW_SAGA__STEP_DEADLINE": "30"}) as system:
        [payment] = system.supervisor.of("payment_svc")
        await system.supervisor.kill(payment, signal.SIGTERM)
        ids = [await system.place("carol", ("SPROCKET", 1, "2.25")) for _ in range(50)]
        pending = "SELECT count(*) FROM orders WHERE status='PENDING'"

        async def all_stored() -> bool:  # order_svc stores them as they come (slow days: later)
            return await system.scalar("order_svc", pending) == 50

        await wait_until(all_stored, timeout=30, interval=0.2)
        assert await system.scalar("order_svc", pending) == 50
        assert all(system.status(o) == "PENDING" for o in ids)
        await system.supervisor.start(payment)
        await system.wait(ids, timeout=60)
        assert {system.status(o) for o in ids} == {"CONFIRMED"}
        await system.quiet_check()


async def test_a_participant_that_never_answers_leads_to_compensation_within_the_deadline() -> None:
    async with running_system() as system:  # deadline 2 s, one re-send
        [inventory] = system.supervisor.of("inventory_svc")
        await system.supervisor.kill(inventory, signal.SIGKILL)
        order_id = await system.place("alice", ("WIDGET", 1, "9.99"))
        await system.wait([order_id], timeout=30)
        assert system.status(order_id) == "REJECTED"
        assert "no reply" in (system.client.outcomes[order_id].reason or "")
        # two sends of 2 s each, then compensation: timed out 4 s after the step's first send,
        # give or take the timer's work (from the saga log, whatever the machine's speed; a log
        # row's time is its insert's, a few ms after the "now" its deadline was counted from;
        # one send alone would time out after 2 s)
        waited = await system.scalar(
            "saga",
            """SELECT extract(epoch FROM max(at) FILTER (WHERE event = 'timed_out')
                      - min(at) FILTER (WHERE event = 'command_sent' AND step = (
                            SELECT step FROM saga_log WHERE saga_id = $1 AND event = 'timed_out'
                            LIMIT 1)))
                 FROM saga_log WHERE saga_id = $1""",
            order_id,
        )
        assert 2 * 2 - 0.5 <= float(waited) < 2 * 2 + 1.5, waited
        assert await system.scalar(
            "payment_svc", "SELECT balance FROM customers WHERE id='alice'"
        ) == Decimal("1000.00")
        events = await system.scalar(
            "saga",
            "SELECT string_agg(event, ',' ORDER BY id) FROM saga_log WHERE saga_id=$1",
            order_id,
        )
        assert "retry" in events and "timed_out" in events and events.endswith("compensated")
        # the late participant comes back: it reserves, then releases; nothing is left held
        await system.supervisor.start(inventory)
        await system.quiet_check(timeout=30)
        assert (
            await system.scalar("inventory_svc", "SELECT on_hand FROM stock WHERE sku='WIDGET'")
            == 1000
        )


async def test_two_saga_and_two_payment_replicas_handle_300_orders_and_every_invariant_holds() -> (
    None
):
    async with running_system(
        replicas={"saga": 2, "payment_svc": 2}, extra_env={"ORDERFLOW_SAGA__STEP_DEADLINE": "30"}
    ) as system:
        mix = (
            [("carol", ("SPROCKET", 2, "2.25"))] * 8
            + [("bob", ("GADGET", 2, "24.50"))]
            + [("carol", ("GIZMO", 10, "149.00"))]
        )
        ids = []
        for n in range(300):
            customer, item = mix[n % len(mix)]
            ids.append(await system.place(customer, item))
        await system.wait(ids, timeout=120)
        statuses = [system.status(o) for o in ids]
        assert statuses.count("CONFIRMED") == 240
        assert statuses.count("REJECTED") == 60
        report = await system.quiet_check()
        assert report.figures["double_charges"] == 0
        # the broker spread the work: both saga replicas completed sagas
        log = system.log.getvalue().splitlines()
        for replica in ("saga#1", "saga#2"):
            assert any(line.startswith(replica) and '"saga.completed"' in line for line in log), (
                replica
            )
