"""Dead letters are replayed where the topology says, never where their headers claim."""

from __future__ import annotations

import dataclasses
import json
import uuid

from libs.messaging.consumer import ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY
from libs.messaging.deadletters import DeadLetter
from libs.messaging.topology import topic_matches
from libs.settings import Settings
from orderflow.dlq import replay_policy

SETTINGS = Settings(amqp_url="amqp://operator:pw@127.0.0.1:5672/orderflow")
POLICY = replay_policy(SETTINGS)
SAGA = SETTINGS.broker_user("saga")
ORDER_SVC = SETTINGS.broker_user("order_svc")


def body(type_: str) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/test",
            "type": type_,
            "data": {"order_id": str(uuid.uuid4())},
        }
    ).encode()


def letter(
    queue: str,
    type_: str,
    *,
    user_id: str | None,
    recorded: str | None = None,
    amqp_type: str | None = None,
    **headers: str,
) -> DeadLetter:
    return DeadLetter(
        queue=queue,
        message_id="m",
        type=type_ if amqp_type is None else amqp_type,
        error_class="X",
        error="x",
        service="s",
        attempts=1,
        exchange=headers.get(ORIGINAL_EXCHANGE, ""),
        routing_key=headers.get(ORIGINAL_ROUTING_KEY, ""),
        dead_at=None,
        headers=dict(headers),
        body=body(type_),
        user_id=user_id,
        recorded_sender=recorded,
    )


def test_topic_patterns_match_as_rabbitmq_does() -> None:
    assert topic_matches("#", "a.b.c")
    assert topic_matches("a.*.c", "a.b.c")
    assert topic_matches("a.#", "a")
    assert not topic_matches("a.*", "a.b.c")
    assert not topic_matches("order.order_created.v1", "order.order_confirmed.v1")


def test_a_letter_goes_back_to_the_exchange_its_queue_consumes_its_type_from() -> None:
    found = POLICY.destination(
        letter(
            "payment_svc.commands.dlq",
            "payment.process_payment.v1",
            user_id=SAGA,  # dead-lettered by the broker: the original's own user_id
            **{ORIGINAL_EXCHANGE: "inventory.commands", ORIGINAL_ROUTING_KEY: "evil"},
        )
    )
    assert found == ("payment.commands", "payment.process_payment.v1")


def test_a_letter_whose_type_its_queue_does_not_consume_stays() -> None:
    why = POLICY.destination(
        letter("payment_svc.commands.dlq", "inventory.reserve_inventory.v1", user_id=SAGA)
    )
    assert isinstance(why, str) and "does not consume" in why


def test_an_impostors_letter_is_never_replayed() -> None:
    # dead-lettered by order_svc, which recorded the stranger who sent it
    why = POLICY.destination(
        letter(
            "order_svc.commands.dlq",
            "order.approve_order.v1",
            user_id=ORDER_SVC,
            recorded="stranger",
        )
    )
    assert isinstance(why, str) and "impostor" in why
    ok = POLICY.destination(
        letter("order_svc.commands.dlq", "order.approve_order.v1", user_id=ORDER_SVC, recorded=SAGA)
    )
    assert ok == ("order.commands", "order.approve_order.v1")


def test_a_sender_recorded_by_anyone_but_the_queues_consumer_is_worth_nothing() -> None:
    """A letter the broker dead-lettered keeps the headers its sender wrote, a forged record of
    the sender among them: the letter's own user_id decides."""
    why = POLICY.destination(
        letter(
            "order_svc.commands.dlq", "order.approve_order.v1", user_id="stranger", recorded=SAGA
        )
    )
    assert isinstance(why, str) and "'stranger'" in why


def test_the_type_in_the_body_decides_not_the_amqp_property() -> None:
    """An ApproveOrder body under a public AMQP type must not pass for a PlaceOrder."""
    why = POLICY.destination(
        letter(
            "order_svc.commands.dlq",
            "order.approve_order.v1",
            user_id=ORDER_SVC,
            recorded="stranger",
            amqp_type="order.place_order.v1",
        )
    )
    assert isinstance(why, str) and "is not its event's type" in why
    unreadable = letter("order_svc.commands.dlq", "order.place_order.v1", user_id="stranger")
    unreadable = dataclasses.replace(unreadable, body=b"{not json")
    found = POLICY.destination(unreadable)
    assert isinstance(found, str) and "not a readable event" in found


def test_anyone_may_have_sent_a_public_type_and_unknown_types_stay() -> None:
    assert POLICY.destination(
        letter("order_svc.commands.dlq", "order.place_order.v1", user_id="stranger")
    ) == ("order.commands", "order.place_order.v1")
    why = POLICY.destination(
        letter("order_svc.commands.dlq", "order.launch.v1", user_id="operator")
    )
    assert isinstance(why, str) and "not a known message type" in why
    assert isinstance(
        POLICY.destination(letter("nowhere.dlq", "order.place_order.v1", user_id=None)), str
    )
