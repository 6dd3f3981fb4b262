"""`orderflow check` fails on every invariant it knows, with a sentence naming what broke.

One real system for the whole module: a few orders run to their end, then each case breaks one
invariant on purpose, right in the services' databases or the broker, asserts the sentence, and
undoes the break (the check must hold again before the next case).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
import pytest_asyncio

from orderflow.check import CheckReport, check

from .conftest import System, cli, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class World:
    system: System
    confirmed: str  # alice, WIDGET x2 (19.98)
    declined: str  # bob, GADGET x3 (73.50): insufficient funds, never charged
    out_of_stock: str  # alice, GIZMO x5 (745.00): charged, then refunded


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    async with running_system() as system:
        confirmed = await system.place("alice", ("WIDGET", 2, "9.99"))
        declined = await system.place("bob", ("GADGET", 3, "24.50"))
        out_of_stock = await system.place("alice", ("GIZMO", 5, "149.00"))
        await system.wait([confirmed, declined, out_of_stock])
        assert [system.status(o) for o in (confirmed, declined, out_of_stock)] == [
            "CONFIRMED",
            "REJECTED",
            "REJECTED",
        ]
        await system.quiet_check()
        yield World(system, confirmed, declined, out_of_stock)


async def sql(world: World, service: str, query: str) -> Any:
    return await world.system.scalar(service, query, admin=True)


async def run_check(world: World, **options: Any) -> CheckReport:
    return await check(world.system.settings, allow_dead_letters=False, **options)


async def holds(world: World) -> CheckReport:
    report = await run_check(world)
    assert report.ok, "\n".join(report.violations)
    return report


async def until(
    world: World, done: Callable[[CheckReport], bool], timeout: float = 15, **options: Any
) -> CheckReport:
    """Check again and again until ``done`` says so (the broker's statistics lag)."""
    deadline = time.monotonic() + timeout
    while True:
        report = await run_check(world, **options)
        if done(report) or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.5)


def named(violations: Sequence[str], *words: str) -> str:
    """The violation that says all of ``words``."""
    for line in violations:
        if all(word in line for word in words):
            return line
    raise AssertionError(f"no violation says {words}; there are:\n" + "\n".join(violations))


@asynccontextmanager
async def broken(
    world: World, do: list[tuple[str, str]], undo: list[tuple[str, str]]
) -> AsyncIterator[CheckReport]:
    """Apply ``do`` (service, statement) pairs, yield the failing report, then ``undo``."""
    try:
        for service, statement in do:
            await sql(world, service, statement)
        report = await run_check(world)
        assert not report.ok
        yield report
    finally:
        for service, statement in undo:
            await sql(world, service, statement)
    await holds(world)


async def test_a_quiet_system_passes_and_its_figures_add_up(world: World) -> None:
    report = await holds(world)
    assert report.figures["orders"] == {"CONFIRMED": 1, "REJECTED": 2}
    assert report.figures["double_charges"] == 0
    assert report.figures["refunds"] == 1
    assert set(report.figures["dead_letters"].values()) == {0}
    assert report.figures["queues"]["saga.events"]["ready"] == 0
    assert report.figures["inbox_records_checked"]["payment_svc"] == 4  # 3 charges, 1 refund
    code, out = await cli(world.system.env, "check")
    assert code == 0, out
    assert "all invariants hold" in out


# -- orders and sagas ------------------------------------------------------------------------


async def test_an_order_not_terminal_or_not_matching_its_saga(world: World) -> None:
    o = world.confirmed
    set_status = "UPDATE orders SET status = '{}' WHERE id = '" + o + "'"
    async with broken(
        world,
        [("order_svc", set_status.format("PENDING"))],
        [("order_svc", set_status.format("CONFIRMED"))],
    ) as report:
        named(report.violations, f"order {o} is PENDING but its saga is COMPLETED")
    set_saga = "UPDATE saga_instance SET status = '{}' WHERE id = '" + o + "'"
    async with broken(
        world, [("saga", set_saga.format("COMPENSATED"))], [("saga", set_saga.format("COMPLETED"))]
    ) as report:
        named(report.violations, f"order {o} is CONFIRMED but its saga is COMPENSATED")
    move = "UPDATE saga_instance SET saga = '{}' WHERE id = '" + o + "'"
    async with broken(
        world, [("saga", move.format("elsewhere"))], [("saga", move.format("order"))]
    ) as report:
        named(report.violations, f"order {o} is CONFIRMED but has no saga")


async def test_with_the_saga_stopped_a_backlog_an_overdue_and_a_stuck_saga_are_named(
    world: World,
) -> None:
    system = world.system
    [saga] = system.supervisor.of("saga")
    await system.supervisor.kill(saga, signal.SIGTERM)
    try:
        # a message waits in the coordinator's queue: ready, then delivered and not acked
        connection = await aio_pika.connect(system.env["ORDERFLOW_AMQP_URL"])
        try:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", message_id=str(uuid.uuid4())), routing_key="saga.events"
            )
            report = await run_check(world)
            named(report.violations, "queue saga.events has a backlog", "1 message(s) ready")
            assert report.figures["queues"]["saga.events"] == {
                "ready": 1,
                "unacked": None,  # not counted unless asked
                "consumers": 0,
            }
            queue = await channel.get_queue("saga.events", ensure=False)
            message = await queue.get(no_ack=False)
            # counted by the broker's statistics, which lag by up to 5 s
            report = await until(world, lambda r: not r.ok, count_unacked=True)
            counted = not any("unacked deliveries not counted" in note for note in report.notes)
            assert counted or not shutil.which("rabbitmqctl"), report.notes
            if counted:
                named(report.violations, "queue saga.events", "0 message(s) ready, 1 unacked")
            await message.ack()
        finally:
            await connection.close()
        report = await until(world, lambda r: r.ok, count_unacked=True)
        assert report.ok, report.violations

        o = world.confirmed
        overdue = (
            "UPDATE saga_instance SET status = 'RUNNING', step = 'payment', attempt = 1, "
            f"deadline_at = now() - interval '1 minute' WHERE id = '{o}'"
        )
        done = (
            "UPDATE saga_instance SET status = 'COMPLETED', step = NULL, attempt = 0, "
            f"deadline_at = NULL WHERE id = '{o}'"
        )
        async with broken(world, [("saga", overdue)], [("saga", done)]) as report:
            named(
                report.violations, f"saga of order {o} is RUNNING at step payment past its deadline"
            )
            named(report.violations, f"order {o} is CONFIRMED but its saga is RUNNING")

        r = world.out_of_stock
        compensating = (
            "UPDATE saga_instance SET status = 'COMPENSATING', step = NULL, attempt = {}, "
            f"deadline_at = now() + interval '1 hour' WHERE id = '{r}'"
        )
        compensated = (
            "UPDATE saga_instance SET status = 'COMPENSATED', step = NULL, attempt = 0, "
            f"deadline_at = NULL WHERE id = '{r}'"
        )
        # attempts beyond the policy (1 re-send in these tests)
        async with broken(
            world, [("saga", compensating.format(5))], [("saga", compensated)]
        ) as report:
            named(
                report.violations,
                f"saga of order {r} is COMPENSATING and stuck re-sending",
                "attempt 5",
            )
        # within the policy by its attempt, but the log shows re-send after re-send
        resends = (
            "INSERT INTO saga_log (saga, saga_id, event, status, detail) "
            f"SELECT 'order', '{r}', 'retry', 'COMPENSATING', '{{\"planted\": true}}' "
            "FROM generate_series(1, 9)"
        )
        forget = f"DELETE FROM saga_log WHERE saga_id = '{r}' AND detail ? 'planted'"
        async with broken(
            world,
            [("saga", compensating.format(2)), ("saga", resends)],
            [("saga", forget), ("saga", compensated)],
        ) as report:
            named(
                report.violations, f"saga of order {r}", "stuck re-sending", "9 re-send(s) logged"
            )
    finally:
        await system.supervisor.start(saga)
        await system.supervisor.wait_ready(children=[saga])
    await holds(world)


# -- money -----------------------------------------------------------------------------------


async def test_money_taken_without_a_ledger_row_fails_the_customer(world: World) -> None:
    async with broken(
        world,
        [("payment_svc", "UPDATE customers SET balance = balance - 1 WHERE id = 'alice'")],
        [("payment_svc", "UPDATE customers SET balance = balance + 1 WHERE id = 'alice'")],
    ) as report:
        named(report.violations, "customer alice: balance is down 20.98", "the ledger nets 19.98")
        named(report.violations, "customer alice spent 20.98 but CONFIRMED orders total 19.98")
        assert report.figures["double_charges"] == 1


async def test_a_rejected_order_that_keeps_money_is_named(world: World) -> None:
    r = world.out_of_stock
    # the refund never happened: charged once, kept
    async with broken(
        world,
        [
            ("payment_svc", f"DELETE FROM ledger WHERE order_id = '{r}' AND kind = 'refund'"),
            ("payment_svc", "UPDATE customers SET balance = balance - 745 WHERE id = 'alice'"),
        ],
        [
            (
                "payment_svc",
                "INSERT INTO ledger (order_id, customer_id, kind, amount) "
                f"VALUES ('{r}', 'alice', 'refund', 745.00)",
            ),
            ("payment_svc", "UPDATE customers SET balance = balance + 745 WHERE id = 'alice'"),
        ],
    ) as report:
        named(report.violations, f"order {r} is REJECTED but nets 745.00 in the ledger")
        named(
            report.violations,
            f"order {r}: its payment is REFUNDED but the ledger holds a charge and no refund",
        )
        assert report.figures["double_charges"] >= 1
    # a declined order charged after all, and not its total
    d = world.declined
    async with broken(
        world,
        [
            (
                "payment_svc",
                "INSERT INTO ledger (order_id, customer_id, kind, amount) "
                f"VALUES ('{d}', 'bob', 'charge', 1.00)",
            ),
            ("payment_svc", "UPDATE customers SET balance = balance - 1 WHERE id = 'bob'"),
        ],
        [
            ("payment_svc", f"DELETE FROM ledger WHERE order_id = '{d}'"),
            ("payment_svc", "UPDATE customers SET balance = balance + 1 WHERE id = 'bob'"),
        ],
    ) as report:
        named(report.violations, f"order {d} is REJECTED but nets 1.00 in the ledger")
        named(report.violations, f"order {d}: its ledger charge of 1.00 is not its total 73.50")


async def test_a_confirmed_order_must_net_its_total_from_its_own_customer(world: World) -> None:
    o = world.confirmed
    charge = f"UPDATE ledger SET {{}} WHERE order_id = '{o}' AND kind = 'charge'"
    async with broken(
        world,
        [("payment_svc", charge.format("amount = amount + 1"))],
        [("payment_svc", charge.format("amount = amount - 1"))],
    ) as report:
        named(report.violations, f"order {o} is CONFIRMED for 19.98 but nets 20.98 in the ledger")
        named(report.violations, f"order {o}: its ledger charge of 20.98 is not its total 19.98")
    async with broken(
        world,
        [("payment_svc", charge.format("customer_id = 'carol'"))],
        [("payment_svc", charge.format("customer_id = 'alice'"))],
    ) as report:
        named(report.violations, f"order {o}: its ledger charge is on customer carol")
    payment = f"UPDATE payments SET status = '{{}}' WHERE order_id = '{o}'"
    async with broken(
        world,
        [("payment_svc", payment.format("DECLINED"))],
        [("payment_svc", payment.format("CAPTURED"))],
    ) as report:
        named(report.violations, f"order {o} is CONFIRMED but its payment is DECLINED")


async def test_an_order_total_is_the_sum_of_its_lines(world: World) -> None:
    o = world.confirmed
    total = f"UPDATE orders SET total = total {{}} 1 WHERE id = '{o}'"
    async with broken(
        world, [("order_svc", total.format("+"))], [("order_svc", total.format("-"))]
    ) as report:
        named(report.violations, f"order {o} has a total of 20.98 but its lines sum to 19.98")


# -- stock -----------------------------------------------------------------------------------


async def test_stock_taken_must_be_what_reservations_hold(world: World) -> None:
    on_hand = "UPDATE stock SET on_hand = on_hand {} 1 WHERE sku = 'WIDGET'"
    async with broken(
        world, [("inventory_svc", on_hand.format("-"))], [("inventory_svc", on_hand.format("+"))]
    ) as report:
        named(report.violations, "SKU WIDGET: 3 taken from stock but RESERVED reservations hold 2")
        named(report.violations, "SKU WIDGET: 3 taken but CONFIRMED orders hold 2")
    o = world.confirmed
    lines = f"UPDATE reservation_lines SET quantity = quantity {{}} 1 WHERE order_id = '{o}'"
    async with broken(
        world, [("inventory_svc", lines.format("+"))], [("inventory_svc", lines.format("-"))]
    ) as report:
        named(
            report.violations,
            f"order {o}: its RESERVED reservation lists WIDGET:3 but its lines are WIDGET:2",
        )


async def test_a_failed_reservation_holds_nothing_and_stock_is_never_negative(
    world: World,
) -> None:
    r = world.out_of_stock
    status = f"UPDATE reservations SET status = '{{}}' WHERE order_id = '{r}'"
    async with broken(
        world,
        [("inventory_svc", status.format("RESERVED"))],
        [("inventory_svc", status.format("FAILED"))],
    ) as report:
        named(report.violations, f"order {r} is REJECTED but still holds stock")
        named(report.violations, "SKU GIZMO: 0 taken from stock but RESERVED reservations hold 5")
    async with broken(
        world,
        [
            ("inventory_svc", "ALTER TABLE stock DROP CONSTRAINT stock_on_hand_check"),
            ("inventory_svc", "UPDATE stock SET on_hand = -1 WHERE sku = 'SPROCKET'"),
        ],
        [
            ("inventory_svc", "UPDATE stock SET on_hand = opening_on_hand WHERE sku = 'SPROCKET'"),
            (
                "inventory_svc",
                "ALTER TABLE stock ADD CONSTRAINT stock_on_hand_check CHECK (on_hand >= 0)",
            ),
        ],
    ) as report:
        named(report.violations, "SKU SPROCKET has negative stock -1")
