"""order_svc's own settings: its limits on placing orders (``ORDERFLOW_ORDER__<NAME>``)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrderSettings(BaseSettings):
    """order_svc's limits on placing orders."""

    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_ORDER__", extra="ignore")

    max_total: Decimal = Field(
        default=Decimal("100000.00"),
        gt=0,
        le=Decimal("1000000000"),
        decimal_places=2,
        allow_inf_nan=False,
        description="an order whose total (at catalog prices) is over this is refused",
    )
