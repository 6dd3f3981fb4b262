"""compose.yaml and the Dockerfile, checked without a Docker engine (none runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from orderflow.system import SYSTEM

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = SYSTEM.names


def test_compose_runs_the_infrastructure_and_the_four_services() -> None:
    assert {"rabbitmq", "postgres", "jaeger", "setup", *SERVICES} <= set(COMPOSE["services"])


def test_the_infrastructure_publishes_its_ports_and_has_health_checks() -> None:
    ports = {name: set(svc.get("ports", [])) for name, svc in COMPOSE["services"].items()}
    assert {"5672:5672", "15672:15672"} <= ports["rabbitmq"]
    assert "5432:5432" in ports["postgres"]
    assert {"16686:16686", "4317:4317", "4318:4318"} <= ports["jaeger"]
    for name in ("rabbitmq", "postgres", "jaeger", *SERVICES):
        assert COMPOSE["services"][name]["healthcheck"]["test"], name
    assert COMPOSE["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "management" in COMPOSE["services"]["rabbitmq"]["image"]


def test_services_start_after_setup_and_send_traces_to_jaeger() -> None:
    setup = COMPOSE["services"]["setup"]
    assert setup["command"] == ["orderflow", "setup"]
    assert setup["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert setup["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in SERVICES:
        svc = COMPOSE["services"][name]
        assert svc["command"] == ["python", "-m", name]
        assert svc["depends_on"]["setup"]["condition"] == "service_completed_successfully"
        env = svc["environment"]
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["ORDERFLOW_AMQP_URL"] == f"amqp://orderflow_{name}@rabbitmq:5672/orderflow"
        dsns = [key for key in env if key.endswith("_DSN")]
        assert len(dsns) == 1 and f"orderflow_{name}@postgres:5432/" in env[dsns[0]]


def test_each_service_container_gets_only_its_own_credentials() -> None:
    for name in SERVICES:
        svc = COMPOSE["services"][name]
        env = svc["environment"]
        assert not [k for k in env if any(w in k for w in ("PASSWORD", "ADMIN", "SECRET_"))], name
        assert not any(":orderflow@" in str(v) for v in env.values()), name  # no admin password
        assert svc["volumes"] == [f"secrets-{name}:/run/orderflow-secrets:ro"], name
    setup = COMPOSE["services"]["setup"]
    assert setup["environment"]["ORDERFLOW_SECRETS_PER_SERVICE"] == "true"
    assert {v.split(":")[0] for v in setup["volumes"]} == {f"secrets-{n}" for n in SERVICES}


def test_the_broker_definitions_file_creates_the_vhost_compose_points_at() -> None:
    definitions = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text())
    assert {"name": "orderflow"} in definitions["vhosts"]
    mount = COMPOSE["services"]["rabbitmq"]["volumes"][0]
    assert mount.startswith("./deploy/rabbitmq/definitions.json:")


def test_the_dockerfile_builds_from_the_lock_file_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml uv.lock" in text
    syncs = re.findall(r"uv sync ([^\n]+)", text)
    assert syncs
    assert all("--frozen" in s for s in syncs)
    assert re.search(r"^USER (?!root)", text, re.M)
    for package in ("libs", *SERVICES, "orderflow"):
        assert f"COPY {package} ./{package}" in text
    uv_pin = re.search(r"uv==([0-9.]+)", text)
    assert uv_pin is not None
