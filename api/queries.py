"""The query API: reads only, answered from the read models."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from litestar import Request, get
from litestar.params import Parameter

from api.auth import runtime_of
from api.billing_views import subscription_usage
from api.schemas import (
    CustomerMeterOut,
    CustomerUsageOut,
    ListOut,
    MeterUsageOut,
    StoredEventOut,
    UsageRowOut,
    decimal_text,
    instant_text,
)
from api.views import customer_zone, meter_out
from domain.catalog import check_timezone
from domain.errors import InvalidInput, NotFound
from domain.instants import from_us
from domain.periods import calendar_month
from projections.usage import untag
from projections.usage_view import (
    customer_row,
    earliest_fact,
    list_meters,
    list_usage_events,
    meter_row,
    meter_total,
    meter_usage,
)

WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")


def parse_instant(text: str | None, field: str) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise InvalidInput(f"{field} must be an RFC 3339 instant", field) from None
    if instant.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone offset", field)
    return instant.astimezone(UTC)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000", "limit")
    return limit


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(cursor: str | None) -> list[Any] | None:
    if not cursor:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise InvalidInput("cursor is not one this API issued", "cursor") from None


def split_list(values: list[str] | None) -> list[str]:
    return [part.strip() for v in values or [] for part in v.split(",") if part.strip()]


class UsageQueries:
    """Usage read handlers (mixed into the /v1 controller by create_app)."""

    @get("/usage-events", operation_id="listUsageEvents", sync_to_thread=True)
    def list_events(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        customer: str | None = None,
        event_type: str | None = None,
        from_: str | None = Parameter(None, query="from"),
        to: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ListOut:
        """Stored usage events, oldest first."""
        after = decode_cursor(cursor)
        with runtime_of(request).read_engine.connect() as conn:
            rows = list_usage_events(
                conn,
                tenant.hex,
                customer=customer,
                event_type=event_type,
                start=parse_instant(from_, "from"),
                end=parse_instant(to, "to"),
                limit=check_limit(limit) + 1,
                after=(after[0], after[1]) if after else None,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1]["occurred_us"], rows[-1]["id"]]) if more else None
        return ListOut(data=[_stored_event(r) for r in rows], next_cursor=next_cursor)

    @get("/meters", operation_id="listMeters", sync_to_thread=True)
    def list_meters(self, request: Request[Any, Any, Any], tenant: UUID) -> ListOut:
        with runtime_of(request).read_engine.connect() as conn:
            rows = list_meters(conn, tenant.hex)
        return ListOut(data=[meter_out(r.spec) for r in rows], next_cursor=None)

    @get("/meters/{key:str}", operation_id="getMeter", sync_to_thread=True)
    def get_meter(self, request: Request[Any, Any, Any], tenant: UUID, key: str) -> dict[str, Any]:
        with runtime_of(request).read_engine.connect() as conn:
            return meter_out(meter_row(conn, tenant.hex, key).spec)

    @get("/meters/{key:str}/usage", operation_id="getMeterUsage", sync_to_thread=True)
    def meter_usage(
        self,
        request: Request[Any, Any, Any],
        tenant: UUID,
        key: str,
        customer: str | None = None,
        from_: str | None = Parameter(None, query="from"),
        to: str | None = None,
        window_size: str | None = None,
        time_zone: str = "UTC",
        group_by: list[str] | None = None,
    ) -> MeterUsageOut:
        """A meter's usage per window, customer and group; `from` inclusive, `to` exclusive."""
        size = window_size.upper() if window_size else None
        if size is not None and size not in WINDOW_SIZES:
            raise InvalidInput(
                f"window_size must be one of {', '.join(WINDOW_SIZES)}", "window_size"
            )
        zone = check_timezone(time_zone, "time_zone")
        end = parse_instant(to, "to") or datetime.now(UTC)
        with runtime_of(request).read_engine.connect() as conn:
            meter = meter_row(conn, tenant.hex, key)
            start = parse_instant(from_, "from") or earliest_fact(conn, meter)
            rows = (
                []
                if start is None or (start >= end and from_ is None)
                else meter_usage(
                    conn,
                    meter,
                    start,
                    end,
                    customer=customer,
                    window_size=size,
                    tz=zone,
                    group_by=split_list(group_by),
                )
            )
        return MeterUsageOut(
            meter=key,
            aggregation=meter.spec.aggregation,
            data=[
                UsageRowOut(
                    window_start=instant_text(r.window_start),
                    window_end=instant_text(r.window_end),
                    customer=r.customer,
                    group=r.group,
                    value=decimal_text(r.value),
                )
                for r in rows
            ],
        )

    @get("/customers/{external_id:str}/usage", operation_id="getCustomerUsage", sync_to_thread=True)
    def customer_usage(
        self, request: Request[Any, Any, Any], tenant: UUID, external_id: str
    ) -> CustomerUsageOut:
        """The customer's usage in its current period (its calendar month until it has a
        subscription); amounts come with plans."""
        runtime = runtime_of(request)
        with runtime.read_engine.connect() as conn:
            if customer_row(conn, tenant.hex, external_id) is None:
                raise NotFound(f"no customer {external_id!r}", "external_id")
            billed = subscription_usage(
                conn, tenant.hex, external_id, datetime.now(UTC), runtime.settings.late_event_policy
            )
            if billed is not None:
                return billed
            period = calendar_month(datetime.now(UTC), customer_zone(conn, tenant, external_id))
            lines = [
                CustomerMeterOut(
                    meter=m.spec.key,
                    quantity=decimal_text(
                        meter_total(conn, m, external_id, period.start, period.end)
                    ),
                    amount=None,
                )
                for m in list_meters(conn, tenant.hex)
            ]
        return CustomerUsageOut(
            customer=external_id,
            period_start=instant_text(period.start),
            period_end=instant_text(period.end),
            meters=lines,
            total=decimal_text(Decimal(0)),
        )


class CustomerQueries:
    """GET /v1/customers/{external_id}: the customer as the catalog read model has it."""

    @get("/customers/{external_id:str}", operation_id="getCustomer", sync_to_thread=True)
    def get_customer(
        self, request: Request[Any, Any, Any], tenant: UUID, external_id: str
    ) -> dict[str, Any]:
        with runtime_of(request).read_engine.connect() as conn:
            row = customer_row(conn, tenant.hex, external_id)
        if row is None:
            raise NotFound(f"no customer {external_id!r}", "external_id")
        return {
            "id": "cus_" + row.customer_id,
            "object": "customer",
            "external_id": row.external_id,
            "name": row.name,
            "email": row.email,
            "timezone": row.timezone,
            "currency": row.currency,
        }


def _stored_event(r: Any) -> StoredEventOut:
    return StoredEventOut(
        id="evt_" + r["id"],
        object="usage_event",
        idempotency_key=r["idempotency_key"],
        customer=r["customer"],
        event_type=r["event_type"],
        meter_id=r["meter"],
        value=decimal_text(r["value"]),
        timestamp=instant_text(from_us(r["occurred_us"])),
        properties=untag(json.loads(r["properties"])),
        metadata=untag(json.loads(r["metadata"])) if r["metadata"] else None,
        status="cancelled" if r["cancelled_reason"] is not None else "accepted",
        created_at=instant_text(from_us(r["created_us"])),
    )
