"""The console driven in headless Chromium as an operator would, against the real services."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest

from orderflow.console.access import add_user

from .browser import browser, console_process
from .conftest import System, cli, running_system
from .test_console import OPERATOR, VIEWER, place_order_body, publish_raw

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def add_users(system: System) -> None:
    add_user(system.settings.secrets_dir, OPERATOR[0], "operator", OPERATOR[1])
    add_user(system.settings.secrets_dir, VIEWER[0], "viewer", VIEWER[1])


async def saga_step(system: System, order_id: str) -> str | None:
    return await system.scalar("saga", "SELECT step FROM saga_instance WHERE id = $1", order_id)  # type: ignore[no-any-return]


async def until_step(system: System, order_id: str, step: str, timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        if await saga_step(system, order_id) == step:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"saga {order_id} never reached step {step}")


async def test_orders_appear_stuck_sagas_show_and_an_operator_steers_them() -> None:
    slow = {"ORDERFLOW_SAGA__STEP_DEADLINE": "3", "ORDERFLOW_SAGA__RETRIES": "30"}
    async with (
        running_system(extra_env=slow) as system,
        console_process(system.env, refresh=1.0) as url,
        browser(url) as b,
    ):
        add_users(system)
        sup = system.supervisor
        await b.open("/")
        placed = [await system.place("alice", ("WIDGET", 1, "9.99")) for _ in range(3)]
        await system.wait(placed)
        # the overview refreshes itself: no reload
        await b.until(
            lambda: b.find('#orders-by-status td[data-status="CONFIRMED"]').text == "3",
            10,
            "three confirmed orders on the overview",
        )
        await b.screenshot("overview")
        await b.open("/orders")
        for order_id in placed:
            assert await b.exists(f'#orders tr[data-order="{order_id}"][data-status="CONFIRMED"]')

        # payment_svc stops: its saga shows up as stuck on the open page, within the refresh
        [payment] = sup.of("payment_svc")
        await sup.kill(payment, signal.SIGTERM)
        await b.open("/sagas")
        stuck = await system.place("alice", ("WIDGET", 1, "9.99"))
        await b.until(
            lambda: b.exists_now(f'#stuck-sagas tr[data-order="{stuck}"]'),
            15,
            "the saga waiting on payment listed as stuck",
        )
        await b.screenshot("sagas")

        # an operator compensates it before the pivot; the log names who and why
        await b.log_in(*OPERATOR)
        await b.open(f"/orders/{stuck}")
        assert "to come" in await b.text("#plan")
        await b.screenshot("saga")
        await b.fill("#compensate-reason", "customer called to cancel")
        await b.click("#compensate")
        await b.until(lambda: b.find("#done").text, 10, "compensation accepted")
        timeline = await b.text("#timeline")
        assert "operator_compensate" in timeline
        assert "operator=olga" in timeline and "reason=customer called to cancel" in timeline
        await system.wait([stuck], timeout=30)
        assert system.status(stuck) == "REJECTED"
        await sup.start(payment)
        await sup.wait_ready(children=[payment])

        # past the pivot, compensation is refused: the saga waits on order_svc's approval
        [inventory] = sup.of("inventory_svc")
        [orders] = sup.of("order_svc")
        await sup.kill(inventory, signal.SIGTERM)
        late = await system.place("alice", ("WIDGET", 1, "9.99"))
        await until_step(system, late, "inventory")
        await sup.kill(orders, signal.SIGTERM)
        await sup.start(inventory)
        await until_step(system, late, "approval")
        await b.open(f"/orders/{late}")
        await b.fill("#compensate-reason", "too late surely")
        await b.click("#compensate")
        await b.until(lambda: "too late" in b.find("#problem").text, 10, "compensation refused")
        assert "409" in await b.page()

        # a viewer reads everything and may do nothing
        await b.log_out()
        await b.log_in(*VIEWER)
        await b.open(f"/orders/{late}")
        await b.fill("#retry-reason", "just checking")
        await b.click("#retry")
        await b.until(lambda: "read-only" in b.find("#problem").text, 10, "the viewer refused")
        assert "403" in await b.page()

        await sup.start(orders)
        await sup.wait_ready(children=[orders, inventory])
        await system.wait([late], timeout=60)
        assert system.status(late) == "CONFIRMED"
        await system.quiet_check(timeout=30)


async def test_poisoned_letters_are_grouped_replayed_after_the_fix_and_corrected_once() -> None:
    async with (
        running_system() as system,
        console_process(system.env, refresh=1.0) as url,
        browser(url) as b,
    ):
        add_users(system)
        await b.log_in(*OPERATOR)
        # poison: order_svc's table is gone, so three orders die with the same error
        await system.scalar("order_svc", "ALTER TABLE orders RENAME TO orders_away", admin=True)
        poisoned = [await system.place("alice", ("WIDGET", 1, "9.99")) for _ in range(3)]
        await publish_raw(system, b"{not json at all")
        # a letter with a wrong spec version, which an operator will correct
        wrong_order = str(uuid.uuid4())
        wrong = json.loads(place_order_body(wrong_order))
        wrong["specversion"] = "0.3"
        wrong_id = await publish_raw(system, json.dumps(wrong).encode())

        def groups_seen() -> bool:
            b.driver.refresh()
            return (
                b.exists_now('section.group[data-class="UndefinedTableError"] .count')
                and b.find('section.group[data-class="UndefinedTableError"] .count').text == "3"
            )

        await b.open("/letters")
        await b.until(groups_seen, 30, "three letters grouped under UndefinedTableError")
        assert await b.exists('section.group[data-class="MalformedMessage"]')
        await b.screenshot("dead-letters")

        # the fix, then the group replayed: each order is applied once and confirmed
        await system.scalar("order_svc", "ALTER TABLE orders_away RENAME TO orders", admin=True)
        await b.click('section.group[data-class="UndefinedTableError"] button.replay-group')
        await b.until(lambda: "replayed 3" in b.find("#outcome").text, 20, "group replayed")
        await system.wait(poisoned, timeout=60)
        assert {system.status(o) for o in poisoned} == {"CONFIRMED"}

        # edit and replay: the corrected letter is a new message caused by the dead one
        await b.open(f"/letters/{wrong_id}")
        await b.screenshot("dead-letter")
        body = await b.call(lambda: b.find("#edit-body").get_attribute("value"))
        assert body is not None and '"0.3"' in body
        await b.fill("#edit-body", body.replace('"0.3"', '"1.0"'))
        await b.click("#edit-replay")
        outcome = await b.until(lambda: b.find("#outcome").text, 20, "corrected letter sent")
        new_id = outcome.split("message ")[1].split(" ")[0]
        for _ in range(300):
            if (
                await system.scalar(
                    "order_svc", "SELECT status FROM orders WHERE id = $1", wrong_order
                )
                == "CONFIRMED"
            ):
                break
            await asyncio.sleep(0.1)
        applied = await system.scalar(
            "order_svc", "SELECT count(*) FROM inbox WHERE message_id = $1", new_id
        )
        assert applied == 1
        # the same correction sent again (a double click, a retry) is absorbed by the inbox
        await publish_raw(system, corrected_body(new_id, body), message_id=new_id)
        await asyncio.sleep(2)
        assert (
            await system.scalar(
                "payment_svc", "SELECT count(*) FROM ledger WHERE order_id = $1", wrong_order
            )
            == 1
        )
        assert (
            await system.scalar(
                "order_svc", "SELECT count(*) FROM inbox WHERE message_id = $1", new_id
            )
            == 1
        )

        # the unreadable one is purged, after a confirmation; then every invariant holds
        await b.open("/letters")
        await b.click('section.group[data-class="MalformedMessage"] button.purge-group')
        await b.until(lambda: "cannot be undone" in b.find("#confirm-what").text, 10, "asked")
        await b.click("#confirm-purge")
        await b.until(lambda: "deleted 1" in b.find("#outcome").text, 10, "purged")
        code, out = await cli(system.env, "check")
        assert code == 0, out


def corrected_body(new_id: str, edited: str) -> bytes:
    """The corrected letter as it was sent (id and causation set by the console)."""
    doc = json.loads(edited.replace('"0.3"', '"1.0"'))
    doc["id"] = new_id
    return json.dumps(doc).encode()
