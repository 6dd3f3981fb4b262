"""Settings read from the environment (prefix ``ORDERFLOW_``), never at import time.

Nested groups use ``__``: ``ORDERFLOW_RELAY__SWEEP_INTERVAL=2``. Every process builds one
:class:`Settings` in its composition root and passes the parts it needs down.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from libs.errors import ConfigurationError
from libs.messaging.admin import ManagementApi
from libs.secrets import read_secret, url_list, user_of, with_credentials

__all__ = [
    "ConsumerSettings",
    "RelayMode",
    "RelaySettings",
    "RetentionSettings",
    "SagaSettings",
    "Settings",
]

RelayMode = Literal["in-process", "off", "only"]


class RelaySettings(BaseModel):
    """How the outbox relay claims, publishes and retries."""

    mode: RelayMode = Field(
        default="in-process",
        description="in-process: consumers and relay; off: consumers only; only: the relay only",
    )
    batch_size: int = Field(default=256, ge=1, le=10_000)
    sweep_interval: float = Field(default=5.0, gt=0, description="safety sweep, seconds")
    standby_interval: float = Field(
        default=1.0, gt=0, description="how often a standby tries to become the leader"
    )
    max_attempts: int = Field(default=10, ge=1, description="then the row is dead-lettered")
    retry_base: float = Field(default=0.5, gt=0, description="first retry delay, seconds")
    retry_cap: float = Field(default=60.0, gt=0, description="longest retry delay, seconds")
    confirm_timeout: float = Field(default=10.0, gt=0)


class RetentionSettings(BaseModel):
    """What the relay leader of each database deletes, once per ``interval``, in batches."""

    interval: float = Field(default=60.0, gt=0, description="seconds between rounds")
    outbox: float = Field(
        default=3600.0, gt=0, description="published outbox rows are kept this long, seconds"
    )
    inbox: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="inbox records are kept this long, seconds: longer than any redelivery "
        "can take (a copy arriving later would be processed again)",
    )
    sagas: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="ended saga instances and their logs are kept this long, seconds",
    )
    batch: int = Field(default=1000, ge=1, le=100_000, description="rows per delete")
    pause: float = Field(default=0.05, ge=0, description="seconds between two deletes")


class ConsumerSettings(BaseModel):
    """How consumers take, retry and dead-letter deliveries."""

    prefetch: int = Field(default=128, ge=1, le=65_535)
    batch: bool = Field(
        default=True,
        description="handle the deliveries that have arrived together in one transaction and ack",
    )
    max_batch: int = Field(default=128, ge=1, le=10_000)
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="batch workers per service, each on its own channel with prefetch/workers",
    )
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    conflict_retries: int = Field(
        default=5, ge=0, description="retries of a serialization failure or deadlock"
    )
    unavailable_window: float = Field(
        default=120.0,
        ge=0,
        description="how long to keep retrying while the database is unreachable, seconds",
    )
    retry_base: float = Field(default=0.05, gt=0)
    retry_cap: float = Field(default=5.0, gt=0)


class SagaSettings(BaseModel):
    """Deadlines of a saga's steps."""

    step_deadline: float = Field(default=10.0, gt=0, description="seconds to wait for a reply")
    retries: int = Field(default=2, ge=0, description="re-sends before compensating")
    timer_sweep: float = Field(
        default=1.0, gt=0, description="longest sleep of the deadline timer, seconds"
    )


class Settings(BaseSettings):
    """Everything a process of orderflow reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="ORDERFLOW_", env_nested_delimiter="__", extra="ignore"
    )

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/orderflow"
    """The operator's broker URL (setup, CLI). Services replace its user with their own."""
    amqp_quorum_size: int | None = Field(default=None, ge=1, le=7)
    """Replicas of each quorum queue (its initial group size). Default: one per node named in
    ``amqp_url`` (several comma-separated node URLs: a cluster), at most three."""
    amqp_service_users: bool = True
    """Services log in as ``orderflow_<service>`` with their own password and permissions."""
    amqp_user_prefix: str = Field(default="orderflow_", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    """Service users are ``<prefix><service>`` (users are global to the broker, not per vhost:
    a test or a second installation on the same broker uses a prefix of its own)."""
    amqp_operator_user: str | None = None
    """The operator's broker login (default: the user of ``amqp_url``). A service trusts it to
    send any type (it administers the broker and replays dead letters); a service's environment
    names it without its password."""
    amqp_password: SecretStr | None = None
    """This process's own broker password (a service's). ``setup`` never gives it to several
    users: each service user gets a password of its own."""
    amqp_password_file: Path | None = None
    amqp_ca_file: Path | None = None
    amqp_cert_file: Path | None = None
    amqp_key_file: Path | None = None
    rabbitmq_api: str | None = None
    """The broker's management HTTP API, for administration where ``rabbitmqctl`` is not on
    PATH (default: port 15672 of the ``amqp_url`` host)."""
    rabbitmq_admin_user: str | None = None
    """Its login (default: the ``amqp_url`` user)."""
    rabbitmq_admin_password: SecretStr | None = None
    rabbitmq_node: str | None = None
    """The node ``rabbitmqctl`` administers (a cluster's, e.g. ``of1@localhost``); default: the
    local default node."""
    """Its password (default: the ``amqp_url`` password)."""
    pg_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    """A role that may create databases and roles: setup and migrations only."""
    databases: dict[str, str] = Field(default_factory=dict)
    """Every ``ORDERFLOW_<KEY>_DSN`` variable, by lower-case key: a service's own database
    (``ORDERFLOW_ORDER_DSN`` for ``order_svc``, see :class:`libs.system.ServiceSpec`)."""
    pg_default_host: str = "127.0.0.1:5432"
    """Where a service's database is when no ``ORDERFLOW_<KEY>_DSN`` names it: then it is
    ``postgresql://<database_prefix><service>@<pg_default_host>/<database_prefix><key>``."""
    database_prefix: str = Field(default="orderflow_", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    pg_password: SecretStr | None = None
    pg_password_file: Path | None = None
    secrets_dir: Path = Path("var/secrets")
    secrets_per_service: bool = False
    """``setup`` writes each service's secrets to ``<secrets_dir>/<service>/`` (one volume per
    service in compose) instead of side by side."""
    pool_size: int = Field(default=8, ge=1, le=100)
    log_format: str = Field(default="json", pattern="^(json|console)$")
    log_level: str = "INFO"
    jaeger_url: str = "http://127.0.0.1:16686"
    ready_file: Path | None = None
    """A service writes it once ready and removes it when stopping (container health checks)."""
    uvloop: bool = True
    """Run services on uvloop when it is installed."""
    gc_threshold: int = Field(default=20_000, ge=0)
    """Container objects allocated (net of those freed) between two young-generation garbage
    collections of a running service (Python's default is 700; 0 keeps it). Objects alive once the service is ready are frozen
    out of collections (``gc.freeze``): a saga coordinator spent 6 % of its CPU collecting."""
    faults: str = ""
    """Fault points to enable (chaos tests only), ``name=probability,…``: see libs.faults."""
    faults_seed: int | None = None

    metrics: bool = True
    """Record metrics (OpenTelemetry, exposed for Prometheus on ``/metrics``)."""
    metrics_interval: float = Field(default=5.0, gt=0)
    """Seconds between two samples of the gauges read from the database (outbox, sagas)."""
    http_port: int | None = Field(default=None, ge=0, le=65535)
    """The port of ``/metrics``, ``/livez`` and ``/readyz`` (none: no HTTP server; 0: any
    free port, written to ``http_port_file``)."""
    http_host: str = "127.0.0.1"
    http_port_file: Path | None = None
    """Where a service writes the port it listens on (the supervisor reads it)."""

    @field_validator("ready_file", "faults_seed", "http_port", "http_port_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable (``ORDERFLOW_READY_FILE=``) means the setting is not set."""
        return None if value == "" else value

    relay: RelaySettings = RelaySettings()
    retention: RetentionSettings = RetentionSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    saga: SagaSettings = SagaSettings()

    def dsn_for(self, service: str) -> str:
        """The DSN of one service's own database, with its role's password when one is known."""
        dsn = self._raw_dsn(service)
        role = user_of(dsn)
        password = read_secret(
            value=self.pg_password,
            file=self.pg_password_file,
            secrets_dir=self.secrets_dir_of(service),
            name=f"pg_{role}",
        )
        if password is None or role is None or urlsplit(dsn).password is not None:
            return dsn
        return with_credentials(dsn, password=password)

    def amqp_url_for(self, service: str) -> str:
        """The broker URL a service connects with: its own user, its own password."""
        if not self.amqp_service_users:
            return self.amqp_url
        user = self.broker_user(service)
        password = read_secret(
            value=self.amqp_password,
            file=self.amqp_password_file,
            secrets_dir=self.secrets_dir_of(service),
            name=f"amqp_{user}",
        )
        if password is None:
            raise ConfigurationError(
                f"no broker password for {user}: run `orderflow setup` (it writes "
                f"{self.secrets_dir}/amqp_{user}) or set ORDERFLOW_AMQP_PASSWORD(_FILE)"
            )
        return with_credentials(self.amqp_url, user=user, password=password)

    def management_api(self) -> ManagementApi:
        """The management API as configured, defaults taken from ``amqp_url``."""
        url = urlsplit(url_list(self.amqp_url)[0])
        password = self.rabbitmq_admin_password
        return ManagementApi(
            url=self.rabbitmq_api or f"http://{url.hostname or '127.0.0.1'}:15672",
            user=self.rabbitmq_admin_user or unquote(url.username or "guest"),
            password=(
                password.get_secret_value() if password else unquote(url.password or "guest")
            ),
            node=self.rabbitmq_node,
        )

    def quorum_replicas(self) -> int:
        """How many replicas each quorum queue gets (see ``amqp_quorum_size``)."""
        if self.amqp_quorum_size is not None:
            return self.amqp_quorum_size
        return min(3, len(url_list(self.amqp_url)))

    def broker_user(self, service: str) -> str:
        return f"{self.amqp_user_prefix}{service}"

    def service_login(self, service: str) -> str:
        """The broker user a service actually logs in as (its own, or the operator's)."""
        if self.amqp_service_users:
            return self.broker_user(service)
        return user_of(self.amqp_url) or ""  # they all log in with the URL's own user

    def operator_user(self) -> str | None:
        return self.amqp_operator_user or user_of(self.amqp_url)

    def secrets_dir_of(self, service: str) -> Path:
        """Where ``setup`` writes a service's secrets."""
        return self.secrets_dir / service if self.secrets_per_service else self.secrets_dir

    def amqp_ssl_context(self) -> ssl.SSLContext | None:
        """TLS for ``amqps://`` URLs: the CA to trust and, if given, this client's certificate."""
        if not self.amqp_url.startswith("amqps://"):
            return None
        context = ssl.create_default_context(
            cafile=str(self.amqp_ca_file) if self.amqp_ca_file else None
        )
        if self.amqp_cert_file:
            context.load_cert_chain(
                str(self.amqp_cert_file), str(self.amqp_key_file) if self.amqp_key_file else None
            )
        return context

    def _raw_dsn(self, service: str) -> str:
        """A service's ``ORDERFLOW_<KEY>_DSN`` (``order_svc`` -> ``ORDERFLOW_ORDER_DSN``, the
        convention of :class:`libs.system.ServiceSpec`), else its default database."""
        key = service.removesuffix("_svc")
        if not _SERVICE_NAME.match(service) or key == "pg_admin":  # never the administrator's
            raise ValueError(f"{service!r} is not a service name with a database of its own")
        dsn = self.databases.get(key)
        if dsn:
            return dsn
        prefix = self.database_prefix
        return f"postgresql://{prefix}{service}@{self.pg_default_host}/{prefix}{key}"

    # -- where settings come from ---------------------------------------------------------
    _environ: ClassVar[Mapping[str, str] | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = cls._environ
        if environ is not None:  # Settings.of(env): that mapping, not this process's environment
            source = EnvSettingsSource(settings_cls)
            source.env_vars = {k.lower(): v for k, v in environ.items()}
            return (init_settings, source, _Databases(settings_cls, environ))
        return (init_settings, env_settings, _Databases(settings_cls, os.environ))

    @classmethod
    def of(cls, environ: Mapping[str, str]) -> Settings:
        """Settings as ``environ`` says (e.g. a child process's environment), not this
        process's own."""

        class FromMapping(cls):  # type: ignore[valid-type,misc]
            _environ: ClassVar[Mapping[str, str] | None] = MappingProxyType(dict(environ))

        return FromMapping()


_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_DSN_VARIABLE = re.compile(r"^ORDERFLOW_([A-Z0-9_]+)_DSN$")


class _Databases(PydanticBaseSettingsSource):
    """``ORDERFLOW_<NAME>_DSN`` variables, all of them, into the ``databases`` field."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {}
        for key, value in self._environ.items():
            match = _DSN_VARIABLE.match(key.upper())
            if match and match[1] != "PG_ADMIN" and value:
                found[match[1].lower()] = value
        return {"databases": found} if found else {}
