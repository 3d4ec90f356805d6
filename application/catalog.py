"""Catalog commands: tenants, API keys, customers and meters."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.store import Ledger
from domain.catalog import (
    Customer,
    Meter,
    MeterIndex,
    MeterSpec,
    check_currency,
    check_timezone,
    customer_id_for,
    meter_id_for,
    meter_index_id_for,
    parse_meter,
)
from domain.errors import Conflict, InvalidInput, NotFound
from domain.tenants import ApiKey, Tenant, api_key_id_for, hash_key, new_secret, tenant_id_for

CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class IssuedKey:
    tenant_id: UUID
    secret: str


class Catalog:
    """Commands over tenants, keys, customers and meters, with short-lived caches
    for the look-ups every request makes (API keys, meters of an event type)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, UUID | None]] = {}
        self._meters: dict[UUID, tuple[float, dict[str, MeterSpec], dict[str, list[str]]]] = {}

    # Tenants and keys

    def create_tenant(self, name: str) -> IssuedKey:
        """Create a tenant (or reuse one of that name) and issue it a fresh key."""
        tenant_id = tenant_id_for(name)
        try:
            self.ledger.repository.get(tenant_id)
        except AggregateNotFoundError:
            self.ledger.save(Tenant(name=name))
        return self.issue_key(tenant_id, label="created with tenant")

    def issue_key(self, tenant_id: UUID, label: str = "") -> IssuedKey:
        secret = new_secret()
        self.ledger.save(ApiKey(key_hash=hash_key(secret), tenant_id=tenant_id.hex, label=label))
        return IssuedKey(tenant_id=tenant_id, secret=secret)

    def revoke_key(self, secret_or_hash: str) -> None:
        key_hash = secret_or_hash if len(secret_or_hash) == 64 else hash_key(secret_or_hash)
        key = self._get(api_key_id_for(key_hash), "key")
        key.check_active()
        key.revoke()
        self.ledger.save(key)
        with self._lock:
            self._keys.pop(key_hash, None)

    def tenant_for_key(self, secret: str) -> UUID | None:
        """The tenant a secret key authenticates, or None (cached for a second)."""
        key_hash = hash_key(secret)
        now = time.monotonic()
        cached = self._keys.get(key_hash)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            key = self.ledger.repository.get(api_key_id_for(key_hash))
            tenant = None if key.revoked else UUID(key.tenant_id)
        except AggregateNotFoundError:
            tenant = None
        with self._lock:
            self._keys[key_hash] = (now, tenant)
        return tenant

    # Customers

    def create_customer(self, tenant_id: UUID, data: dict[str, Any]) -> Customer:
        external_id = data.get("external_id")
        if not isinstance(external_id, str) or not external_id or len(external_id) > 255:
            raise InvalidInput("external_id is required (1-255 characters)", "external_id")
        customer = Customer(
            tenant_id=tenant_id.hex,
            external_id=external_id,
            name=str(data.get("name") or external_id),
            email=data.get("email"),
            timezone=check_timezone(data.get("timezone") or "UTC"),
            currency=check_currency(data.get("currency") or "USD"),
        )
        try:
            self.ledger.save(customer)
        except IntegrityError:
            raise Conflict(f"customer {external_id!r} already exists", "external_id") from None
        return customer

    def update_customer(self, tenant_id: UUID, external_id: str, data: dict[str, Any]) -> Customer:
        customer = self.get_customer(tenant_id, external_id)
        changes: dict[str, Any] = {}
        for name in ("name", "email"):
            if name in data:
                changes[name] = data[name]
        if "timezone" in data:
            changes["timezone"] = check_timezone(data["timezone"])
        if "currency" in data:
            changes["currency"] = check_currency(data["currency"])
        if changes:
            customer.update(changes)
            self.ledger.save(customer)
        return customer

    def get_customer(self, tenant_id: UUID, external_id: str) -> Customer:
        return self._get(customer_id_for(tenant_id, external_id), "customer")

    # Meters

    def create_meter(self, tenant_id: UUID, data: dict[str, Any]) -> MeterSpec:
        spec = parse_meter(data)
        meter = Meter(tenant_id=tenant_id.hex, spec=spec.to_dict())
        index = self._meter_index(tenant_id)
        index.index(spec.key, spec.event_type)
        try:
            self.ledger.save(meter, index)
        except IntegrityError:
            raise Conflict(f"meter {spec.key!r} already exists", "key") from None
        self._forget_meters(tenant_id)
        return spec

    def archive_meter(self, tenant_id: UUID, key: str) -> None:
        meter = self._get(meter_id_for(tenant_id, key), "meter")
        if meter.archived:
            return
        meter.archive()
        index = self._meter_index(tenant_id)
        index.unindex(key, meter.spec["event_type"])
        self.ledger.save(meter, index)
        self._forget_meters(tenant_id)

    def meter(self, tenant_id: UUID, key: str) -> MeterSpec:
        """A live meter of this tenant, or NotFound."""
        specs, _ = self.meters(tenant_id)
        if key not in specs:
            raise NotFound(f"no meter {key!r}", "meter_id")
        return specs[key]

    def meters(self, tenant_id: UUID) -> tuple[dict[str, MeterSpec], dict[str, list[str]]]:
        """The tenant's live meters by key, and their keys by event type (cached briefly:
        another API process sees a new meter within a second)."""
        now = time.monotonic()
        cached = self._meters.get(tenant_id)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1], cached[2]
        try:
            index = self.ledger.repository.get(meter_index_id_for(tenant_id))
            by_type = {t: list(keys) for t, keys in index.by_type.items()}
        except AggregateNotFoundError:
            by_type = {}
        specs: dict[str, MeterSpec] = {}
        for keys in by_type.values():
            for key in keys:
                meter = self.ledger.repository.get(meter_id_for(tenant_id, key))
                specs[key] = parse_meter(meter.spec)
        with self._lock:
            self._meters[tenant_id] = (now, specs, by_type)
        return specs, by_type

    def _meter_index(self, tenant_id: UUID) -> MeterIndex:
        try:
            return self.ledger.repository.get(meter_index_id_for(tenant_id))
        except AggregateNotFoundError:
            return MeterIndex(tenant_id=tenant_id.hex)

    def _forget_meters(self, tenant_id: UUID) -> None:
        with self._lock:
            self._meters.pop(tenant_id, None)

    def _get(self, aggregate_id: UUID, what: str) -> Any:
        try:
            return self.ledger.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no such {what}", what) from None
