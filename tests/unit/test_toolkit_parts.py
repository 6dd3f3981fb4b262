"""Pure parts of the toolkit: fault points, topology arguments, settings, error translation."""

from __future__ import annotations

import asyncpg
import pytest

from libs.errors import ConcurrencyConflict, ConfigurationError, InfrastructureUnavailable
from libs.faults import Faults
from libs.messaging.admin import vhost_of, with_vhost
from libs.messaging.connection import redact
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, Binding, QueueSpec, Topology
from libs.pg.errors import translate
from libs.settings import Settings


def test_a_fault_point_fires_with_its_probability_and_reproducibly() -> None:
    def run(seed: int) -> list[int]:
        hits: list[int] = []
        faults = Faults({"consumer.after_commit": 0.3}, seed=seed, action=lambda _: None)
        for i in range(200):
            before = faults.hits.get("consumer.after_commit", 0)
            faults.point("consumer.after_commit")
            if faults.hits.get("consumer.after_commit", 0) > before:
                hits.append(i)
        return hits

    assert run(7) == run(7)
    assert 30 < len(run(7)) < 90


def test_fault_points_are_read_from_the_settings_and_checked() -> None:
    from libs.settings import Settings

    settings = Settings(faults="relay.after_publish=1", faults_seed=3)
    faults = Faults.from_spec(settings.faults, settings.faults_seed)
    fired: list[str] = []
    faults._action = fired.append
    faults.point("relay.after_publish")
    faults.point("consumer.after_commit")
    assert fired == ["relay.after_publish"]
    with pytest.raises(ConfigurationError, match="unknown fault points"):
        Faults.from_spec("everything=1")
    with pytest.raises(ConfigurationError, match="name=probability"):
        Faults.from_spec("relay.after_publish")


def test_fault_points_come_from_the_environment_through_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from libs.settings import Settings

    monkeypatch.setenv("ORDERFLOW_FAULTS", "consumer.after_commit=0.5")
    monkeypatch.setenv("ORDERFLOW_FAULTS_SEED", "7")
    monkeypatch.setenv("ORDERFLOW_UVLOOP", "0")
    settings = Settings()
    assert (settings.faults, settings.faults_seed, settings.uvloop) == (
        "consumer.after_commit=0.5",
        7,
        False,
    )


def test_consumer_queues_are_quorum_with_a_delivery_limit_and_their_own_dead_letter_queue() -> None:
    spec = QueueSpec("payment_svc.commands", (Binding("payment.commands", "#"),), delivery_limit=4)
    args = spec.arguments()
    assert args["x-queue-type"] == "quorum"
    assert args["x-delivery-limit"] == 4
    assert args["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE
    assert args["x-dead-letter-routing-key"] == "payment_svc.commands"
    assert spec.dead_letter_queue == "payment_svc.commands.dlq"
    topology = Topology(("payment.commands",), (spec,))
    assert topology.dead_letter_queues() == ["payment_svc.commands.dlq"]
    with pytest.raises(KeyError):
        topology.queue("nope")


def test_driver_errors_become_transient_errors_only_when_a_retry_can_help() -> None:
    assert isinstance(translate(asyncpg.SerializationError("x")), ConcurrencyConflict)
    assert isinstance(translate(asyncpg.DeadlockDetectedError("x")), ConcurrencyConflict)
    assert isinstance(translate(asyncpg.AdminShutdownError("x")), InfrastructureUnavailable)
    assert isinstance(translate(asyncpg.CannotConnectNowError("x")), InfrastructureUnavailable)
    assert isinstance(translate(ConnectionResetError()), InfrastructureUnavailable)
    unique = asyncpg.UniqueViolationError("x")
    assert translate(unique) is unique
    bug = KeyError("x")
    assert translate(bug) is bug


def test_settings_come_from_the_environment_with_nested_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERFLOW_RELAY__SWEEP_INTERVAL", "2.5")
    monkeypatch.setenv("ORDERFLOW_PAYMENT_DSN", "postgresql://x@h/pay")
    settings = Settings()
    assert settings.relay.sweep_interval == 2.5
    assert settings.dsn_for("payment_svc") == "postgresql://x@h/pay"
    for bad in ("Billing!", "pg_admin", "../etc"):
        with pytest.raises(ValueError, match="is not a service name"):
            settings.dsn_for(bad)


def test_urls_are_shown_without_passwords_and_vhosts_are_read_and_replaced() -> None:
    assert (
        redact("amqp://svc:s3cret@broker:5672/orderflow") == "amqp://svc:***@broker:5672/orderflow"
    )
    assert vhost_of("amqp://g:g@h:5672/orderflow") == "orderflow"
    assert vhost_of("amqp://g:g@h:5672/") == "/"
    assert with_vhost("amqp://g:g@h:5672/", "t 1") == "amqp://g:g@h:5672/t%201"
