"""Drive billing through the application layer with injected instants (integration tests)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from api.billing_views import invoice_json, trace_events
from projections.billing_view import invoice_line_rows, line_row, list_invoices
from tests.integration.helpers import ingest, item
from workers.billing import RunResult, run_billing
from workers.runtime import Runtime

D = Decimal


def setup(
    rt: Runtime,
    *,
    customer: str = "c1",
    timezone: str = "UTC",
    currency: str = "USD",
    meters: list[dict[str, Any]] | None = None,
    **plan: Any,
) -> UUID:
    """A tenant with one customer, its meters and a plan "p"."""
    tenant = rt.catalog.create_tenant("acme").tenant_id
    rt.catalog.create_customer(
        tenant, {"external_id": customer, "timezone": timezone, "currency": currency}
    )
    for meter in meters or [{"key": "calls", "event_type": "api", "aggregation": "COUNT"}]:
        rt.catalog.create_meter(tenant, meter)
    spec: dict[str, Any] = {
        "key": "p",
        "currency": currency,
        "interval": "week",
        "prices": [{"meter": "calls", "model": "per_unit", "unit_price": "1"}],
    }
    spec.update(plan)
    rt.billing.create_plan(tenant, spec)
    return tenant


def subscribe(rt: Runtime, tenant: UUID, start: datetime, customer: str = "c1", **extra: Any):
    return rt.billing.create_subscription(
        tenant, {"customer": customer, "plan": "p", "start_at": start, **extra}, start
    )


def send(
    rt: Runtime,
    tenant: UUID,
    at: datetime,
    now: datetime,
    key: str,
    *,
    customer: str = "c1",
    event_type: str = "api",
    **fields: Any,
) -> UUID:
    """One usage event at `at`, ingested as if the clock read `now`."""
    outcome = ingest(
        rt, tenant, [item(key, customer, event_type=event_type, timestamp=at, **fields)], now=now
    )[0]
    assert outcome.status == "accepted", outcome.error
    assert outcome.event_id is not None
    return outcome.event_id


def send_many(rt: Runtime, tenant: UUID, items: list[dict[str, Any]], now: datetime) -> None:
    for start in range(0, len(items), 1000):
        outcomes = ingest(rt, tenant, items[start : start + 1000], now=now)
        assert all(o.status == "accepted" for o in outcomes), [o.error for o in outcomes][:3]


def bill(rt: Runtime, as_of: datetime) -> RunResult:
    result = run_billing(rt, as_of)
    rt.sync_read_models(rt.ledger.recorder.max_notification_id() or 0)
    return result


def invoices(rt: Runtime, tenant: UUID, customer: str = "c1") -> list[dict[str, Any]]:
    """The customer's invoices as the API shows them, oldest first."""
    rt.sync_read_models(rt.ledger.recorder.max_notification_id() or 0)
    with rt.read_engine.connect() as conn:
        rows = list_invoices(
            conn,
            tenant.hex,
            customer=customer,
            status=None,
            subscription=None,
            limit=1000,
            before=None,
        )
        lines = invoice_line_rows(conn, [r.invoice_id for r in rows])
        return [invoice_json(r, lines[r.invoice_id]) for r in reversed(rows)]


def line(invoice: dict[str, Any], meter: str, kind: str = "usage") -> dict[str, Any]:
    return next(x for x in invoice["lines"] if x["meter"] == meter and x["type"] == kind)


def trace(
    rt: Runtime, invoice: dict[str, Any], line_json: dict[str, Any]
) -> list[tuple[str, datetime, Decimal]]:
    """(event id, timestamp, contribution) of every event behind a line."""
    import json

    from domain.instants import from_us

    with rt.read_engine.connect() as conn:
        row = line_row(conn, invoice["id"][4:], line_json["id"][3:])
        found = trace_events(conn, json.loads(row.trace))
    return [(f.event_id, from_us(f.occurred_us), v) for f, v in found]


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(weeks=1)
US = timedelta(microseconds=1)
