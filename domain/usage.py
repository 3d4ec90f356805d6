"""Usage events: one aggregate per event, keyed by (tenant, idempotency key).

Every usage event is its own stream, so ingestion never appends to a hot
aggregate; meters aggregate in projections. The deterministic id makes the
event store's primary key do the deduplication.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, InvalidInput

MAX_FUTURE = timedelta(minutes=5)
MAX_AGE = timedelta(days=35)
MAX_PROPERTIES = 50
MAX_KEY_LENGTH = 255


def usage_id_for(tenant_id: UUID, idempotency_key: str) -> UUID:
    """The event's id: the same key from the same tenant is always the same id.

    Equal to `uuid5(tenant_id, "usage:" + key)`, computed without its per-call
    overhead because every ingested event needs one.
    """
    digest = hashlib.sha1(tenant_id.bytes + b"usage:" + idempotency_key.encode()).digest()
    return UUID(
        bytes=digest[:6]
        + bytes([(digest[6] & 0x0F) | 0x50])
        + digest[7:8]
        + bytes([(digest[8] & 0x3F) | 0x80])
        + digest[9:16]
    )


class UsageEvent(Aggregate):
    """One usage fact sent by a tenant's application."""

    @event("Recorded")
    def __init__(
        self,
        tenant_id: str,
        idempotency_key: str,
        customer: str,
        event_type: str | None,
        meter: str | None,
        value: Decimal,
        occurred_at: datetime,
        properties: dict[str, Any],
        metadata: dict[str, Any] | None,
        payload_hash: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.idempotency_key = idempotency_key
        self.customer = customer
        self.event_type = event_type
        self.meter = meter
        self.value = value
        self.occurred_at = occurred_at
        self.properties = properties
        self.metadata = metadata
        self.payload_hash = payload_hash
        self.cancelled_reason: str | None = None

    @staticmethod
    def create_id(tenant_id: str, idempotency_key: str, **_: Any) -> UUID:
        return usage_id_for(UUID(tenant_id), idempotency_key)

    def check_not_cancelled(self) -> None:
        if self.cancelled_reason is not None:
            raise Conflict(f"usage event {self.idempotency_key!r} is already cancelled")

    @event("Cancelled")
    def cancel(self, reason: str) -> None:
        """The event no longer counts: a correction recorded while its period was open."""
        self.cancelled_reason = reason


@dataclass(frozen=True)
class UsageInput:
    """A validated usage event, before it is stored."""

    idempotency_key: str
    customer: str
    event_type: str | None
    meter: str | None
    value: Decimal
    occurred_at: datetime
    properties: dict[str, Any]
    metadata: dict[str, Any] | None
    payload_hash: str
    key_was_assigned: bool = False


def check_usage(
    *,
    idempotency_key: str | None,
    customer: str | None,
    event_type: str | None,
    meter: str | None,
    value: Decimal | None,
    timestamp: datetime | None,
    properties: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    now: datetime,
    assigned_key: str,
    prefix: str = "",
) -> UsageInput:
    """Apply every ingestion rule of the API contract; InvalidInput names the field."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
        raise InvalidInput("idempotency_key must be 1-255 characters", prefix + "idempotency_key")
    if not customer:
        raise InvalidInput("customer is required", prefix + "customer")
    if len(customer) > MAX_KEY_LENGTH:
        raise InvalidInput("customer must be at most 255 characters", prefix + "customer")
    if not event_type and not meter:
        raise InvalidInput("event_type or meter_id is required", prefix + "event_type")
    if value is not None and not value.is_finite():
        raise InvalidInput("value must be a finite number", prefix + "value")
    _check_properties(properties or {}, prefix + "properties", scalars_only=True)
    if metadata is not None and len(metadata) > MAX_PROPERTIES:
        raise InvalidInput("metadata has more than 50 keys", prefix + "metadata")
    if timestamp is not None:
        _check_timestamp(timestamp, now, prefix + "timestamp")
        timestamp = timestamp.astimezone(UTC)
    request = {
        "customer": customer,
        "event_type": event_type,
        "meter": meter,
        "value": None if value is None else _number_text(value),
        "timestamp": None if timestamp is None else timestamp.isoformat(),
        "properties": properties or {},
        "metadata": metadata,
    }
    return UsageInput(
        idempotency_key=idempotency_key or assigned_key,
        customer=customer,
        event_type=event_type or None,
        meter=meter or None,
        value=Decimal(1) if value is None else value,
        occurred_at=timestamp or now,
        properties=properties or {},
        metadata=metadata,
        payload_hash=payload_hash(request),
        key_was_assigned=idempotency_key is None,
    )


def _check_properties(props: dict[str, Any], where: str, scalars_only: bool) -> None:
    if len(props) > MAX_PROPERTIES:
        raise InvalidInput("properties has more than 50 keys", where)
    for name, item in props.items():
        if scalars_only and not isinstance(item, (str, int, Decimal, bool)):
            raise InvalidInput(
                "property values must be strings, numbers or booleans", f"{where}.{name}"
            )


def _check_timestamp(timestamp: datetime, now: datetime, where: str) -> None:
    if timestamp.tzinfo is None:
        raise InvalidInput("timestamp needs a time zone offset (RFC 3339)", where)
    if timestamp > now + MAX_FUTURE:
        raise InvalidInput("timestamp is more than 5 minutes in the future", where)
    if timestamp < now - MAX_AGE:
        raise InvalidInput("timestamp is older than 35 days", where)


def _number_text(value: Decimal) -> str:
    return (
        format(value.normalize(), "f") if value == value.to_integral() else str(value.normalize())
    )


def payload_hash(request: dict[str, Any]) -> str:
    """Fingerprint of the request as sent: equal for a retry, different for a changed payload."""
    return hashlib.sha256(msgspec.json.encode(request, order="sorted")).hexdigest()[:32]
