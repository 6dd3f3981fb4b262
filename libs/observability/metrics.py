"""Metrics through the OpenTelemetry metrics API, exposed for Prometheus.

:data:`METRICS` holds every instrument a process records to; until :func:`setup_metrics` installs
a meter provider (``ORDERFLOW_METRICS=false`` never does) the instruments record nothing and cost
next to nothing. :func:`exposition` renders what the provider collected in the Prometheus text
format (``/metrics`` of :mod:`libs.service.http`), through ``opentelemetry-exporter-prometheus``:
OpenTelemetry names lose their dots (``messaging.process.duration`` in seconds is
``messaging_process_duration_seconds``), counters gain ``_total``.

Names follow the OpenTelemetry messaging and database conventions where they exist
(``messaging.process.duration``, ``messaging.client.consumed.messages``,
``messaging.client.sent.messages``, ``db.client.operation.duration``); the rest are
``orderflow.*``. No attribute carries an order id, a message id or any other unbounded value:
queues, message types, outcomes, error classes and saga steps are all finite sets.

Values that live in the database (outbox backlog, sagas in flight) are gauges that a sampler
(:class:`Gauges`) refreshes: the callbacks read what the sampler last saw, never the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv._incubating.attributes import messaging_attributes as semconv
from prometheus_client import CollectorRegistry, generate_latest

__all__ = ["METRICS", "Gauges", "Metrics", "exposition", "metrics_enabled", "setup_metrics"]

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_SAGA_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

QUEUE = semconv.MESSAGING_DESTINATION_NAME
TYPE = "orderflow.message.type"
OUTCOME = "orderflow.outcome"
ERROR = "error.type"

_registry = CollectorRegistry()
_configured = False


class Gauges:
    """Values sampled from outside the process's hot path, read by observable instruments.

    ``set(name, value, attributes)`` replaces one series; ``replace(name, series)`` replaces
    all of a gauge's series at once (a step nobody is on any more disappears)."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, Any], ...], float]] = {}

    def set(self, name: str, value: float, attributes: Mapping[str, Any] | None = None) -> None:
        self._values.setdefault(name, {})[tuple(sorted((attributes or {}).items()))] = value

    def replace(self, name: str, series: Iterable[tuple[Mapping[str, Any], float]]) -> None:
        self._values[name] = {tuple(sorted(a.items())): v for a, v in series}

    def get(self, name: str, attributes: Mapping[str, Any] | None = None) -> float | None:
        return self._values.get(name, {}).get(tuple(sorted((attributes or {}).items())))

    def callback(self, name: str) -> Any:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, dict(a)) for a, v in self._values.get(name, {}).items()]

        return observe


class Metrics:
    """Every instrument of an orderflow process (see the module docstring and
    docs/operations.md for what each means)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.gauges = Gauges()
        g = self.gauges
        # consumer
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Deliveries settled, by queue, message type and outcome "
            "(processed, duplicate, dead_lettered, requeued); dead letters by error.type",
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Time from taking a batch to settling it, per delivery",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.batch_size = meter.create_histogram(
            "orderflow.consumer.batch.size",
            unit="{message}",
            description="Deliveries handled in one transaction",
            explicit_bucket_boundaries_advisory=_SIZES,
        )
        self.retries = meter.create_counter(
            "orderflow.consumer.retries",
            unit="{retry}",
            description="Transactions retried, by queue and error.type",
        )
        # outbox and relay
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Messages the relay published and the broker confirmed",
        )
        self.publish_batch = meter.create_histogram(
            "orderflow.outbox.publish.batch.size",
            unit="{message}",
            description="Outbox rows published per claimed batch",
            explicit_bucket_boundaries_advisory=_SIZES,
        )
        self.publish_latency = meter.create_histogram(
            "orderflow.outbox.publish.latency",
            unit="s",
            description="Outbox row inserted to publish confirmed",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        for name, unit, text in (
            ("orderflow.outbox.pending", "{row}", "Outbox rows not yet published"),
            ("orderflow.outbox.lag", "s", "Age of the oldest unpublished outbox row"),
            ("orderflow.outbox.dead", "{row}", "Outbox rows the relay gave up on"),
            ("orderflow.relay.leader", "1", "1 while this process's relay leads its database"),
            ("orderflow.saga.in_flight", "{saga}", "Sagas not ended, by status and step"),
            ("orderflow.saga.overdue", "{saga}", "Sagas past their step deadline"),
            ("orderflow.saga.stuck", "{saga}", "Sagas past their deadline or re-sending a command"),
            ("orderflow.saga.oldest", "s", "Age of the oldest saga not ended"),
            ("orderflow.broker.connected", "1", "1 while the broker connection is up"),
            ("orderflow.database.up", "1", "1 while the database answers"),
            ("orderflow.ready", "1", "1 while /readyz answers 200"),
        ):
            meter.create_observable_gauge(
                name, callbacks=[g.callback(name)], unit=unit, description=text
            )
        # sagas
        self.saga_started = meter.create_counter(
            "orderflow.saga.started", unit="{saga}", description="Sagas started, by saga"
        )
        self.saga_ended = meter.create_counter(
            "orderflow.saga.ended",
            unit="{saga}",
            description="Sagas ended, by saga and outcome (completed, compensated)",
        )
        self.saga_compensations = meter.create_counter(
            "orderflow.saga.compensations",
            unit="{saga}",
            description="Compensations begun, by saga, the step and the cause "
            "(failed, timed_out, operator)",
        )
        self.saga_duration = meter.create_histogram(
            "orderflow.saga.duration",
            unit="s",
            description="Saga start to end, by saga and outcome",
            explicit_bucket_boundaries_advisory=_SAGA_SECONDS,
        )
        # connections and round trips
        self.reconnects = meter.create_counter(
            "orderflow.broker.reconnects",
            unit="{reconnect}",
            description="Broker connections re-established after a loss",
        )
        self.db_operations = meter.create_counter(
            "orderflow.db.client.operations",
            unit="{operation}",
            description="Statements sent to PostgreSQL (round trips), by pool",
        )
        self.pruned = meter.create_counter(
            "orderflow.retention.deleted",
            unit="{row}",
            description="Rows retention deleted, by table",
        )
        self.amqp_operations = meter.create_counter(
            "orderflow.messaging.client.operations",
            unit="{operation}",
            description="Publishes and settlements sent to the broker, by kind",
        )


METRICS = Metrics(metrics.get_meter("orderflow"))


def setup_metrics(service_name: str) -> bool:
    """Install the Prometheus-exposed meter provider, once per process; True when installed
    (now or before)."""
    global _configured
    if _configured:
        return True
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    reader = PrometheusMetricReader(disable_target_info=True, registry=_registry)
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({SERVICE_NAME: service_name})
    )
    metrics.set_meter_provider(provider)
    _configured = True
    return True


def metrics_enabled() -> bool:
    """Whether :func:`setup_metrics` installed the provider in this process."""
    return _configured


def exposition() -> bytes:
    """What the process's instruments hold, in the Prometheus text format."""
    return generate_latest(_registry)
