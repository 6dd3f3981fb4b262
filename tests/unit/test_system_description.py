"""The system is described once (contracts/system.py); what is derived from it agrees."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from contracts.permissions import PUBLISHES, owners
from contracts.system import SYSTEM
from contracts.topology import QUEUES, TOPOLOGY
from libs.messaging.topology import Binding, QueueSpec
from libs.settings import Settings
from libs.system import ServiceSpec, SystemSpec
from libs.testing.infra import service_env
from orderflow.supervisor import COLORS, Supervisor


def test_every_described_service_is_a_package_with_migrations_and_an_entry_point() -> None:
    for name in SYSTEM.names:
        assert callable(importlib.import_module(f"{name}.bootstrap").migrations)
        assert importlib.util.find_spec(f"{name}.__main__") is not None


def test_topology_permissions_supervisor_and_settings_come_from_the_description() -> None:
    assert SYSTEM.topology == TOPOLOGY and set(QUEUES) == set(SYSTEM.names)
    assert {s.name: s.publishes for s in SYSTEM.services} == PUBLISHES
    for exchange in SYSTEM.exchanges:  # every exchange has exactly one publishing service
        assert len(owners(exchange)) == 1, exchange
    for spec in SYSTEM.services:
        for binding in spec.queue.bindings:
            assert binding.exchange in SYSTEM.exchanges
    assert [c.service for c in Supervisor(env={}).children] == list(SYSTEM.names)
    assert set(COLORS) == set(SYSTEM.names)
    assert SYSTEM.dsn_envs == {
        "order_svc": "ORDERFLOW_ORDER_DSN",
        "payment_svc": "ORDERFLOW_PAYMENT_DSN",
        "inventory_svc": "ORDERFLOW_INVENTORY_DSN",
        "saga": "ORDERFLOW_SAGA_DSN",
    }
    settings = Settings()
    for name in SYSTEM.names:
        assert settings.dsn_for(name).startswith("postgresql://")
    # no setting names it: the toolkit's convention, which knows no list of services
    assert settings.dsn_for("nobody_svc") == (
        "postgresql://orderflow_nobody_svc@127.0.0.1:5432/orderflow_nobody"
    )
    with pytest.raises(ValueError, match="unknown service 'nobody_svc'"):
        SYSTEM.service("nobody_svc")


def test_a_fifth_service_is_one_entry_and_the_test_infrastructure_follows() -> None:
    shipping = ServiceSpec(
        "shipping_svc",
        QueueSpec("shipping_svc.commands", (Binding("shipping.commands", "#"),)),
        publishes=("shipping.events",),
        tables=("shipments",),
    )
    bigger = SystemSpec(
        name="bigger",
        services=(*SYSTEM.services, shipping),
        exchanges=(*SYSTEM.exchanges, "shipping.commands", "shipping.events"),
    )
    assert shipping.dsn_env == "ORDERFLOW_SHIPPING_DSN"
    assert bigger.queues["shipping_svc"].name == "shipping_svc.commands"
    assert bigger.publishes["shipping_svc"] == ("shipping.events",)
    env = service_env(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "amqp://guest:guest@127.0.0.1:5672/v",
        prefix="oftest",
        secrets_dir="/nonexistent",
        system=bigger,
    )
    assert env["ORDERFLOW_SHIPPING_DSN"].startswith("postgresql://orderflow_shipping_svc@")
    assert "/oftest_shipping_" in env["ORDERFLOW_SHIPPING_DSN"]


def test_a_new_service_s_database_is_its_own_orderflow_dsn_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERFLOW_SHIPPING_DSN", "postgresql://orderflow_shipping_svc@db/ship")
    assert Settings().dsn_for("shipping_svc") == "postgresql://orderflow_shipping_svc@db/ship"
    # a child's environment, not this process's: its variables only
    child = Settings.of({"ORDERFLOW_GREETER_DSN": "postgresql://g@db/greet"})
    assert child.dsn_for("greeter_svc") == "postgresql://g@db/greet"
    assert child.dsn_for("shipping_svc") == (
        "postgresql://orderflow_shipping_svc@127.0.0.1:5432/orderflow_shipping"
    )
    moved = Settings.of({"ORDERFLOW_PG_DEFAULT_HOST": "db:6432", "ORDERFLOW_DATABASE_PREFIX": "x_"})
    assert moved.dsn_for("shipping_svc") == "postgresql://x_shipping_svc@db:6432/x_shipping"
    assert Settings.of({}).databases == {} and "pg_admin" not in Settings().databases


def test_no_service_name_reaches_the_administrator_dsn_and_empty_settings_are_unset() -> None:
    settings = Settings.of({"ORDERFLOW_PG_ADMIN_DSN": "postgresql://postgres@db/postgres"})
    with pytest.raises(ValueError, match="'pg_admin' is not a service name"):
        settings.dsn_for("pg_admin")
    empty = Settings.of({"ORDERFLOW_READY_FILE": "", "ORDERFLOW_FAULTS_SEED": ""})
    assert (empty.ready_file, empty.faults_seed) == (None, None)
    assert SYSTEM.name == "orderflow"
