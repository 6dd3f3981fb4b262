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


def test_service_health_checks_ask_readyz_on_the_metrics_port() -> None:
    for name in SERVICES:
        svc = COMPOSE["services"][name]
        assert "/readyz" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["environment"]["ORDERFLOW_HTTP_PORT"] == "9100"
        assert "ORDERFLOW_READY_FILE" not in svc["environment"]


def test_prometheus_scrapes_every_service_and_grafana_is_provisioned_beside_it() -> None:
    prometheus = COMPOSE["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        c["labels"]["service"]: c["targets"]
        for job in config["scrape_configs"]
        for c in job["static_configs"]
    }
    assert targets == {name: [f"{name}:9100"] for name in SERVICES}
    assert config["rule_files"] == ["rules.yml"]
    grafana = COMPOSE["services"]["grafana"]
    mounts = {v.split(":")[1] for v in grafana["volumes"]}
    assert mounts == {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"}
    sources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"


def exported_names() -> set[str]:
    """Every metric name the services export, as Prometheus sees it."""
    from libs.observability.metrics import METRICS, exposition, setup_metrics

    setup_metrics("test")
    for gauge in (
        "orderflow.outbox.pending", "orderflow.outbox.lag", "orderflow.outbox.dead",
        "orderflow.relay.leader", "orderflow.saga.in_flight", "orderflow.saga.overdue",
        "orderflow.saga.stuck", "orderflow.saga.oldest", "orderflow.broker.connected",
        "orderflow.database.up", "orderflow.ready",
    ):  # fmt: skip
        METRICS.gauges.set(gauge, 1)
    for counter in (
        METRICS.consumed, METRICS.retries, METRICS.sent, METRICS.saga_started,
        METRICS.saga_ended, METRICS.saga_compensations, METRICS.reconnects,
        METRICS.db_operations, METRICS.pruned, METRICS.amqp_operations,
    ):  # fmt: skip
        counter.add(1)
    for histogram in (
        METRICS.process_duration, METRICS.batch_size, METRICS.publish_batch,
        METRICS.publish_latency, METRICS.saga_duration,
    ):  # fmt: skip
        histogram.record(1)
    names = set(re.findall(r"^(\w+)\{", exposition().decode(), re.M))
    return names | {"up"}


def metrics_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names and matchers left out)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\bby\s*\([^)]*\)", "", expr)
    found = set(re.findall(r"\b((?:orderflow|messaging)_\w+|up)\b", expr))
    return {
        re.sub(r"_(bucket|count|sum)$", "", m) if m.endswith(("_bucket", "_count", "_sum")) else m
        for m in found
    }


def test_the_dashboard_and_the_alerts_use_only_metrics_the_services_export() -> None:
    names = exported_names()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/orderflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in metrics_in(e)}
    unknown = {m for m in used if m not in names and f"{m}_bucket" not in names}
    assert unknown == set()
    assert {"orderflow_saga_stuck", "orderflow_outbox_lag_seconds"} <= used


def test_the_check_of_metric_names_sees_a_name_nobody_exports() -> None:
    names = exported_names()
    assert "orderflow_saga_stuck" in names
    assert "orderflow_sagas_stuck" not in names  # a typo in a rule would be caught
    assert metrics_in('max by (service) (orderflow_sagas_stuck{a="b"}) > 0') == {
        "orderflow_sagas_stuck"
    }


def test_the_console_is_published_on_this_machine_only_with_its_own_users_volume() -> None:
    console = COMPOSE["services"]["console"]
    assert console["command"][:2] == ["orderflow", "console"]
    assert all(p.startswith("127.0.0.1:") for p in console["ports"])
    assert "secrets-console:/run/orderflow-secrets" in console["volumes"]
    # it reads the services' databases as they do, and may change none of their secrets
    assert all(v.endswith(":ro") for v in console["volumes"] if "secrets-console" not in v)
    assert "secrets-console" in COMPOSE["volumes"]
