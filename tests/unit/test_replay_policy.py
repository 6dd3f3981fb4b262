"""Dead letters are replayed where the topology says, never where their headers claim."""

from __future__ import annotations

from libs.contracts import TOPOLOGY
from libs.messaging.consumer import ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY
from libs.messaging.deadletters import DeadLetter
from libs.messaging.topology import topic_matches
from libs.settings import Settings
from orderflow.dlq import replay_policy

SETTINGS = Settings(amqp_url="amqp://operator:pw@127.0.0.1:5672/orderflow")
POLICY = replay_policy(SETTINGS)


def letter(queue: str, type_: str, sender: str | None, **headers: str) -> DeadLetter:
    return DeadLetter(
        queue=queue,
        message_id="m",
        type=type_,
        error_class="X",
        error="x",
        service="s",
        attempts=1,
        exchange=headers.get(ORIGINAL_EXCHANGE, ""),
        routing_key=headers.get(ORIGINAL_ROUTING_KEY, ""),
        dead_at=None,
        headers=dict(headers),
        body=b"{}",
        sender=sender,
    )


def test_topic_patterns_match_as_rabbitmq_does() -> None:
    assert topic_matches("#", "a.b.c")
    assert topic_matches("a.*.c", "a.b.c")
    assert topic_matches("a.#", "a")
    assert not topic_matches("a.*", "a.b.c")
    assert not topic_matches("order.order_created.v1", "order.order_confirmed.v1")


def test_a_letter_goes_back_to_the_exchange_its_queue_consumes_its_type_from() -> None:
    saga_user = SETTINGS.broker_user("saga")
    found = POLICY.destination(
        letter(
            "payment_svc.commands.dlq",
            "payment.process_payment.v1",
            saga_user,
            **{ORIGINAL_EXCHANGE: "inventory.commands", ORIGINAL_ROUTING_KEY: "evil"},
        )
    )
    assert found == ("payment.commands", "payment.process_payment.v1")


def test_a_letter_whose_type_its_queue_does_not_consume_stays() -> None:
    why = POLICY.destination(
        letter("payment_svc.commands.dlq", "inventory.reserve_inventory.v1", "x")
    )
    assert isinstance(why, str) and "does not consume" in why


def test_an_impostors_letter_is_never_replayed() -> None:
    why = POLICY.destination(letter("order_svc.commands.dlq", "order.approve_order.v1", "stranger"))
    assert isinstance(why, str) and "impostor" in why
    ok = POLICY.destination(
        letter("order_svc.commands.dlq", "order.approve_order.v1", SETTINGS.broker_user("saga"))
    )
    assert ok == ("order.commands", "order.approve_order.v1")


def test_anyone_may_have_sent_a_public_type_and_unknown_types_stay() -> None:
    assert POLICY.destination(
        letter("order_svc.commands.dlq", "order.place_order.v1", "stranger")
    ) == ("order.commands", "order.place_order.v1")
    why = POLICY.destination(letter("order_svc.commands.dlq", "order.launch.v1", "operator"))
    assert isinstance(why, str) and "not a known message type" in why
    assert isinstance(POLICY.destination(letter("nowhere.dlq", "order.place_order.v1", None)), str)
    assert TOPOLOGY.queue("order_svc.commands")
