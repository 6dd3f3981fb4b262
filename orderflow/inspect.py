"""Reading the system for operators: orders, saga timelines, instance lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from libs.pg.pool import connection
from libs.saga import store
from libs.saga.store import InstanceRow, LogRow
from libs.settings import Settings
from order_svc import queries as order_queries
from saga.domain import order_saga

SAGA = order_saga.NAME


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@dataclass
class SagaView:
    instance: InstanceRow
    log: list[LogRow]
    trace_id: str | None
    jaeger_url: str | None


async def saga_view(settings: Settings, order_id: str) -> SagaView | None:
    async with connection(settings.dsn_for("saga")) as conn:
        instance = await store.get_instance(conn, saga=SAGA, saga_id=order_id)
        if instance is None:
            return None
        log = await store.timeline(conn, saga=SAGA, saga_id=order_id)
    trace_id = trace_id_of(instance.traceparent)
    url = f"{settings.jaeger_url.rstrip('/')}/trace/{trace_id}" if trace_id else None
    return SagaView(instance, log, trace_id, url)


async def list_sagas(
    settings: Settings, *, state: str | None, stuck: bool, now: datetime, limit: int
) -> list[InstanceRow]:
    async with connection(settings.dsn_for("saga")) as conn:
        return await store.list_instances(
            conn, saga=SAGA, status=state, limit=limit, stuck_before=now if stuck else None
        )


async def list_orders(
    settings: Settings, *, status: str | None, limit: int
) -> list[dict[str, Any]]:
    async with connection(settings.dsn_for("order_svc")) as conn:
        return await order_queries.list_orders(conn, status=status, limit=limit)


async def order_exists(settings: Settings, order_id: str) -> bool:
    async with connection(settings.dsn_for("order_svc")) as conn:
        return order_id in await order_queries.existing(conn, [order_id])
