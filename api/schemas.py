"""Request and response bodies (msgspec Structs), separate for create and read."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec


class UsageEventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One usage event, in either of the two shapes users send."""

    idempotency_key: str | None = None
    meter_id: str | None = None
    event_type: str | None = None
    customer: str | None = None
    customer_id: str | None = None
    value: Decimal | None = None
    timestamp: datetime | None = None
    properties: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    events: list[msgspec.Raw]


class UsageBatchIn(msgspec.Struct):
    """Up to 1000 usage events; each is accepted or rejected on its own."""

    events: list[UsageEventIn]


class CustomerIn(msgspec.Struct):
    """A customer, addressed afterwards by its external_id."""

    external_id: str
    name: str | None = None
    email: str | None = None
    timezone: str = "UTC"
    currency: str = "USD"


class CustomerUpdateIn(msgspec.Struct):
    name: str | None = None
    email: str | None = None
    timezone: str | None = None
    currency: str | None = None


class MeterFilterIn(msgspec.Struct):
    property: str
    operator: str
    value: Any = None


class MeterIn(msgspec.Struct):
    """A meter: an aggregation over one event type."""

    key: str
    event_type: str
    aggregation: str
    name: str | None = None
    value_property: str | None = None
    unique_property: str | None = None
    filters: list[MeterFilterIn] = []
    group_by: list[str] = []
    schema: dict[str, dict[str, str]] | None = None


class CancelIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


class UsageEventOut(msgspec.Struct, omit_defaults=True):
    id: str
    object: str
    idempotency_key: str
    customer: str
    value: str
    timestamp: str
    status: str
    created_at: str
    meter_id: str | None = None
    event_type: str | None = None
    aggregated_total: str | None = None
    aggregated_totals: dict[str, str] | None = None


class BatchResultOut(msgspec.Struct, omit_defaults=True):
    index: int
    status: str
    id: str | None = None
    error: dict[str, Any] | None = None


class BatchOut(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchResultOut]


class UsageRowOut(msgspec.Struct):
    window_start: str
    window_end: str
    customer: str
    group: dict[str, str | None]
    value: str


class MeterUsageOut(msgspec.Struct):
    meter: str
    aggregation: str
    data: list[UsageRowOut]


class CustomerMeterOut(msgspec.Struct):
    meter: str
    quantity: str
    amount: str | None


class CustomerUsageOut(msgspec.Struct):
    customer: str
    period_start: str
    period_end: str
    meters: list[CustomerMeterOut]
    total: str


class StoredEventOut(msgspec.Struct):
    id: str
    object: str
    idempotency_key: str
    customer: str
    event_type: str | None
    meter_id: str | None
    value: str
    timestamp: str
    properties: dict[str, Any]
    metadata: dict[str, Any] | None
    status: str
    created_at: str


class ListOut(msgspec.Struct):
    data: list[Any]
    next_cursor: str | None


def decimal_text(value: Decimal) -> str:
    """A decimal string without exponent: '12.50', '892300'."""
    text = format(value, "f")
    return text


def instant_text(instant: datetime) -> str:
    """RFC 3339 in UTC with a Z, microseconds kept."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
