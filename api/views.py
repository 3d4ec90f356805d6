"""Read shapes shared by the command and query apps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from api.schemas import UsageEventOut, decimal_text
from application.ingest import Outcome
from domain.catalog import Customer, MeterSpec
from domain.periods import calendar_month
from projections.usage_view import customer_row, list_meters, meter_row, meter_total
from workers.runtime import Runtime


def customer_out(customer: Customer) -> dict[str, Any]:
    return {
        "id": "cus_" + customer.id.hex,
        "object": "customer",
        "external_id": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "timezone": customer.timezone,
        "currency": customer.currency,
    }


def meter_out(spec: MeterSpec) -> dict[str, Any]:
    return {"object": "meter", **spec.to_dict()}


def customer_zone(conn: Any, tenant: UUID, external_id: str) -> str:
    row = customer_row(conn, tenant.hex, external_id)
    return row.timezone if row is not None else "UTC"


async def totals_for(
    runtime: Runtime, tenant: UUID, outcome: Outcome, reply: UsageEventOut
) -> None:
    """Fill the reply's aggregated total(s) for the current period, this event included."""
    await asyncio.to_thread(runtime.wait_for_usage, outcome.position, 10.0)
    usage = outcome.usage
    assert usage is not None
    totals = await asyncio.to_thread(
        _totals, runtime, tenant, usage.customer, usage.meter, usage.event_type
    )
    if usage.meter is not None:
        reply.aggregated_total = totals.get(usage.meter, "0")
    else:
        reply.aggregated_totals = totals


def _totals(
    runtime: Runtime, tenant: UUID, customer: str, meter: str | None, event_type: str | None
) -> dict[str, str]:
    with runtime.read_engine.connect() as conn:
        period = calendar_month(datetime.now(UTC), customer_zone(conn, tenant, customer))
        if meter is not None:
            rows = [meter_row(conn, tenant.hex, meter)]
        else:
            rows = [
                m
                for m in list_meters(conn, tenant.hex)
                if m.spec.event_type == event_type and not m.archived
            ]
        return {
            m.spec.key: decimal_text(meter_total(conn, m, customer, period.start, period.end))
            for m in rows
        }
