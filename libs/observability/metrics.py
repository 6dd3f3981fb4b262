"""Metrics through the OpenTelemetry metrics API, exposed for Prometheus.

:data:`METRICS` holds every instrument a process records to; until :func:`setup_metrics` installs
a meter provider (``ORDERFLOW_METRICS=false`` never does) the histograms record nothing and the
counters' sums (a dict update each) are never read. :func:`exposition` renders what the provider collected in the Prometheus text
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

Counters are :class:`Tally` objects: a dict of sums, read by an observable counter when metrics
are collected. An SDK counter aggregates every ``add`` as it happens (about 5 µs each here, and
the hot path adds several per delivery and one per statement); a tally's ``add`` is a dict
update. Prometheus sees the same counters either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv._incubating.attributes import messaging_attributes as semconv
from prometheus_client import CollectorRegistry, generate_latest

__all__ = [
    "METRICS",
    "Gauges",
    "Metrics",
    "Tally",
    "exposition",
    "metrics_enabled",
    "setup_metrics",
]

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


class Tally:
    """A monotonic counter kept as plain sums by attribute set, reported when metrics are
    collected (:meth:`observe`, an observable counter's callback). ``add`` takes what an
    OpenTelemetry counter takes; a negative amount is refused, as the SDK refuses it."""

    __slots__ = ("_sums",)

    def __init__(self) -> None:
        self._sums: dict[tuple[tuple[str, Any], ...], float] = {}

    def add(self, amount: float, attributes: Mapping[str, Any] | None = None) -> None:
        if amount < 0:
            raise ValueError(f"a counter only grows: add({amount})")
        key = tuple(attributes.items()) if attributes else ()
        self._sums[key] = self._sums.get(key, 0) + amount

    def value(self, attributes: Mapping[str, Any] | None = None) -> float:
        """The sum of one attribute set (in any order)."""
        wanted = frozenset((attributes or {}).items())
        return sum(v for k, v in list(self._sums.items()) if frozenset(k) == wanted)

    def observe(self, _: CallbackOptions | None = None) -> list[Observation]:
        merged: dict[frozenset[tuple[str, Any]], float] = {}
        for key, value in list(self._sums.items()):  # a copy: adds may run meanwhile
            attributes = frozenset(key)
            merged[attributes] = merged.get(attributes, 0) + value
        return [Observation(v, dict(a)) for a, v in merged.items()]


_COUNTERS = (  # attribute, name, unit, description
    ("consumed", "messaging.client.consumed.messages", "{message}",
     "Deliveries settled, by queue, message type and outcome (processed, duplicate, "
     "dead_lettered, requeued); dead letters by error.type"),
    ("retries", "orderflow.consumer.retries", "{retry}",
     "Transactions retried, by queue and error.type"),
    ("sent", "messaging.client.sent.messages", "{message}",
     "Messages the relay published and the broker confirmed"),
    ("saga_started", "orderflow.saga.started", "{saga}", "Sagas started, by saga"),
    ("saga_ended", "orderflow.saga.ended", "{saga}",
     "Sagas ended, by saga and outcome (completed, compensated)"),
    ("saga_compensations", "orderflow.saga.compensations", "{saga}",
     "Compensations begun, by saga, the step and the cause (failed, timed_out)"),
    ("reconnects", "orderflow.broker.reconnects", "{reconnect}",
     "Broker connections re-established after a loss"),
    ("db_operations", "orderflow.db.client.operations", "{operation}",
     "Statements sent to PostgreSQL (round trips), by pool"),
    ("pruned", "orderflow.retention.deleted", "{row}", "Rows retention deleted, by table"),
    ("amqp_operations", "orderflow.messaging.client.operations", "{operation}",
     "Publishes and settlements sent to the broker, by kind"),
)  # fmt: skip
_HISTOGRAMS = (  # attribute, name, unit, description, buckets
    ("process_duration", "messaging.process.duration", "s",
     "Time from taking a batch to settling it, per delivery", _SECONDS),
    ("batch_size", "orderflow.consumer.batch.size", "{message}",
     "Deliveries handled in one transaction", _SIZES),
    ("publish_batch", "orderflow.outbox.publish.batch.size", "{message}",
     "Outbox rows published per claimed batch", _SIZES),
    ("publish_latency", "orderflow.outbox.publish.latency", "s",
     "Outbox row inserted to publish confirmed", _SECONDS),
    ("saga_duration", "orderflow.saga.duration", "s",
     "Saga start to end, by saga and outcome", _SAGA_SECONDS),
)  # fmt: skip
_GAUGES = (  # name, unit, description; values from Gauges
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
)


class Metrics:
    """Every instrument of an orderflow process (see the module docstring and
    docs/operations.md for what each means)."""

    consumed: Tally
    retries: Tally
    sent: Tally
    saga_started: Tally
    saga_ended: Tally
    saga_compensations: Tally
    reconnects: Tally
    db_operations: Tally
    pruned: Tally
    amqp_operations: Tally
    process_duration: metrics.Histogram
    batch_size: metrics.Histogram
    publish_batch: metrics.Histogram
    publish_latency: metrics.Histogram
    saga_duration: metrics.Histogram

    def __init__(self, meter: metrics.Meter) -> None:
        self.gauges = Gauges()
        for attribute, name, unit, text in _COUNTERS:
            tally = Tally()
            meter.create_observable_counter(
                name, callbacks=[tally.observe], unit=unit, description=text
            )
            setattr(self, attribute, tally)
        for attribute, name, unit, text, buckets in _HISTOGRAMS:
            histogram = meter.create_histogram(
                name, unit=unit, description=text, explicit_bucket_boundaries_advisory=buckets
            )
            setattr(self, attribute, histogram)
        for name, unit, text in _GAUGES:
            meter.create_observable_gauge(
                name, callbacks=[self.gauges.callback(name)], unit=unit, description=text
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
