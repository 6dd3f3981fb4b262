"""`orderflow check` against broken data: orphans, outboxes, inboxes, dead letters, refused orders."""

from __future__ import annotations

import uuid

import aio_pika
import pytest

from libs.messaging.consumer import ERROR_CLASS, ERROR_MESSAGE
from orderflow.check import check

from .conftest import cli
from .test_check_invariants import World, broken, holds, named, run_check, sql, world

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


# -- orphans, outboxes, inboxes ------------------------------------------------------------------


async def test_rows_of_orders_that_do_not_exist_are_orphans(world: World) -> None:
    ghost = [str(uuid.uuid4()) for _ in range(4)]
    async with broken(
        world,
        [
            (
                "payment_svc",
                "INSERT INTO payments (order_id, customer_id, amount, status) "
                f"VALUES ('{ghost[0]}', 'alice', 0, 'DECLINED')",
            ),
            (
                "payment_svc",
                "INSERT INTO ledger (order_id, customer_id, kind, amount) "
                f"VALUES ('{ghost[1]}', 'carol', 'refund', 1.00)",
            ),
            (
                "inventory_svc",
                f"INSERT INTO reservations (order_id, status) VALUES ('{ghost[2]}', 'CANCELLED')",
            ),
            (
                "saga",
                "INSERT INTO saga_instance (saga, id, status, state, version) "
                f"VALUES ('order', '{ghost[3]}', 'COMPLETED', '{{}}', 1)",
            ),
        ],
        [
            ("payment_svc", f"DELETE FROM payments WHERE order_id = '{ghost[0]}'"),
            ("payment_svc", f"DELETE FROM ledger WHERE order_id = '{ghost[1]}'"),
            ("inventory_svc", f"DELETE FROM reservations WHERE order_id = '{ghost[2]}'"),
            ("saga", f"DELETE FROM saga_instance WHERE id = '{ghost[3]}'"),
        ],
    ) as report:
        v = report.violations
        named(v, f"orphan payment (DECLINED, 0.00): order {ghost[0]} does not exist in order_svc")
        named(v, f"orphan ledger refund of 1.00 on customer carol: order {ghost[1]} does not exist")
        named(v, f"orphan reservation (CANCELLED): order {ghost[2]} does not exist")
        named(v, f"orphan saga (COMPLETED): order {ghost[3]} does not exist")


async def test_outboxes_must_be_drained(world: World) -> None:
    row = (
        "INSERT INTO outbox (message_id, message_type, aggregate_type, aggregate_id, exchange, "
        "routing_key, payload, available_at, dead_at, last_error) VALUES ('{id}', "
        "'test.planted.v1', 'order', '{order}', 'payment.events', 'test.planted.v1', '\\x00', "
        "{available}, {dead}, 'planted by a test')"
    )
    pending, dead = str(uuid.uuid4()), str(uuid.uuid4())
    async with broken(
        world,
        [
            (
                "payment_svc",
                row.format(
                    id=pending,
                    order=world.confirmed,
                    available="now() + interval '1 hour'",
                    dead="NULL",
                ),
            ),
            (
                "inventory_svc",
                row.format(id=dead, order=world.declined, available="now()", dead="now()"),
            ),
        ],
        [
            ("payment_svc", f"DELETE FROM outbox WHERE message_id = '{pending}'"),
            ("inventory_svc", f"DELETE FROM outbox WHERE message_id = '{dead}'"),
        ],
    ) as report:
        named(
            report.violations,
            "payment_svc: 1 outbox rows not published",
            f"test.planted.v1 for order {world.confirmed}",
        )
        named(
            report.violations,
            "inventory_svc: 1 outbox rows dead",
            f"for order {world.declined} (planted by a test)",
        )


async def test_every_effect_has_the_inbox_record_of_its_command(world: World) -> None:
    o = world.confirmed
    approve = "UPDATE inbox SET consumer = '{}' WHERE message_type = 'order.approve_order.v1'"
    async with broken(
        world,
        [("order_svc", approve.format("order_svc#2"))],
        [("order_svc", approve.format("order_svc"))],
    ) as report:
        named(report.violations, f"order {o}: order_svc's inbox has no record of the ApproveOrder")
        named(
            report.violations,
            "order_svc inbox: 1 row(s) of order.approve_order.v1 recorded by consumer 'order_svc#2'",
        )
    stray = str(uuid.uuid4())
    async with broken(
        world,
        [
            (
                "payment_svc",
                "INSERT INTO inbox (consumer, message_id, message_type) "
                f"VALUES ('payment_svc', '{stray}', 'payment.unknown.v1')",
            )
        ],
        [("payment_svc", f"DELETE FROM inbox WHERE message_id = '{stray}'")],
    ) as report:
        named(
            report.violations,
            "payment_svc inbox: 1 row(s) of type 'payment.unknown.v1'",
            "does not handle",
        )


# -- dead letters ------------------------------------------------------------------------------


async def test_dead_letters_fail_the_check_unless_allowed(world: World) -> None:
    connection = await aio_pika.connect(world.system.env["ORDERFLOW_AMQP_URL"])
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                b"{}",
                message_id=str(uuid.uuid4()),
                type="payment.process_payment.v1",
                headers={ERROR_CLASS: "PlantedError", ERROR_MESSAGE: "planted by a test"},
            ),
            routing_key="payment_svc.commands.dlq",
        )
        report = await run_check(world)
        named(
            report.violations,
            "dead-letter queue payment_svc.commands.dlq holds 1 message(s)",
            "payment.process_payment.v1 (PlantedError: planted by a test)",
        )
        allowed = await check(world.system.settings, allow_dead_letters=True)
        assert allowed.ok, allowed.violations
        assert any("payment_svc.commands.dlq holds 1" in note for note in allowed.notes)
        code, out = await cli(world.system.env, "check")
        assert code == 1
        assert "dead-letter queue payment_svc.commands.dlq holds 1 message(s)" in out
        code, out = await cli(world.system.env, "check", "--allow-dead-letters")
        assert code == 0, out
        assert "PlantedError: planted by a test" in out
        assert "all invariants hold" in out
        # the look took nothing away
        queue = await channel.get_queue("payment_svc.commands.dlq", ensure=False)
        await queue.purge()
    finally:
        await connection.close()
    await holds(world)


# -- refused orders (last: the column is dropped and added back) ------------------------------


async def test_refused_orders_have_no_saga_nor_payment(world: World) -> None:
    refused = str(uuid.uuid4())
    await sql(
        world,
        "order_svc",
        "INSERT INTO orders (id, customer_id, status, total, currency, reason, refused, "
        f"placed_by) VALUES ('{refused}', 'alice', 'REJECTED', 0, 'USD', 'refused by a test', "
        f"true, '{uuid.uuid4()}')",
    )
    report = await holds(world)
    assert report.figures["refused"] == 1
    async with broken(
        world,
        [
            (
                "saga",
                "INSERT INTO saga_instance (saga, id, status, state, version) "
                f"VALUES ('order', '{refused}', 'COMPENSATED', '{{}}', 1)",
            ),
            (
                "payment_svc",
                "INSERT INTO payments (order_id, customer_id, amount, status) "
                f"VALUES ('{refused}', 'alice', 0, 'CANCELLED')",
            ),
        ],
        [
            ("saga", f"DELETE FROM saga_instance WHERE id = '{refused}'"),
            ("payment_svc", f"DELETE FROM payments WHERE order_id = '{refused}'"),
        ],
    ) as report:
        named(
            report.violations,
            f"order {refused} was refused at placement but has a saga (COMPENSATED)",
        )
        named(
            report.violations,
            f"order {refused} was refused at placement but has a payment (CANCELLED)",
        )
