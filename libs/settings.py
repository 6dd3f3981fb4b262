"""Settings read from the environment (prefix ``ORDERFLOW_``), never at import time.

Nested groups use ``__``: ``ORDERFLOW_RELAY__SWEEP_INTERVAL=2``. Every process builds one
:class:`Settings` in its composition root and passes the parts it needs down.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("order_svc", "payment_svc", "inventory_svc", "saga")


class RelaySettings(BaseModel):
    """How the outbox relay claims, publishes and retries."""

    batch_size: int = Field(default=256, ge=1, le=10_000)
    sweep_interval: float = Field(default=5.0, gt=0, description="safety sweep, seconds")
    standby_interval: float = Field(
        default=1.0, gt=0, description="how often a standby tries to become the leader"
    )
    max_attempts: int = Field(default=10, ge=1, description="then the row is dead-lettered")
    retry_base: float = Field(default=0.5, gt=0, description="first retry delay, seconds")
    retry_cap: float = Field(default=60.0, gt=0, description="longest retry delay, seconds")
    confirm_timeout: float = Field(default=10.0, gt=0)


class ConsumerSettings(BaseModel):
    """How consumers take, retry and dead-letter deliveries."""

    prefetch: int = Field(default=32, ge=1, le=65_535)
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
    """Deadlines of the order saga's steps."""

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
    pg_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    order_dsn: str = "postgresql://postgres@127.0.0.1:5432/orderflow_order"
    payment_dsn: str = "postgresql://postgres@127.0.0.1:5432/orderflow_payment"
    inventory_dsn: str = "postgresql://postgres@127.0.0.1:5432/orderflow_inventory"
    saga_dsn: str = "postgresql://postgres@127.0.0.1:5432/orderflow_saga"
    pool_size: int = Field(default=8, ge=1, le=100)
    log_format: str = Field(default="json", pattern="^(json|console)$")
    log_level: str = "INFO"
    jaeger_url: str = "http://127.0.0.1:16686"
    relay: RelaySettings = RelaySettings()
    consumer: ConsumerSettings = ConsumerSettings()
    saga: SagaSettings = SagaSettings()

    def dsn_for(self, service: str) -> str:
        """The DSN of one service's own database."""
        dsns = {
            "order_svc": self.order_dsn,
            "payment_svc": self.payment_dsn,
            "inventory_svc": self.inventory_dsn,
            "saga": self.saga_dsn,
        }
        try:
            return dsns[service]
        except KeyError:
            raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}") from None
