"""Customers and meters: the catalog that usage is measured against."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidInput

AGGREGATIONS = ("COUNT", "SUM", "MAX", "MIN", "LAST", "AVG", "UNIQUE_COUNT", "WEIGHTED_SUM")
OPERATORS = ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "exists")
SCHEMA_TYPES = ("number", "string", "boolean")


def customer_id_for(tenant_id: UUID, external_id: str) -> UUID:
    """Deterministic customer id: one customer per (tenant, external id)."""
    return uuid5(tenant_id, f"customer:{external_id}")


def meter_id_for(tenant_id: UUID, key: str) -> UUID:
    """Deterministic meter id: one meter per (tenant, key)."""
    return uuid5(tenant_id, f"meter:{key}")


def check_timezone(name: str, field_name: str = "timezone") -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown IANA time zone {name!r}", field_name) from None
    return name


def check_currency(code: str) -> str:
    if len(code) != 3 or not code.isalpha():
        raise InvalidInput(f"currency must be a 3-letter ISO 4217 code, got {code!r}", "currency")
    return code.upper()


class Customer(Aggregate):
    """A customer of a tenant, addressed by the tenant's own external id."""

    @event("Created")
    def __init__(
        self,
        tenant_id: str,
        external_id: str,
        name: str,
        email: str | None,
        timezone: str,
        currency: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.external_id = external_id
        self.name = name
        self.email = email
        self.timezone = timezone
        self.currency = currency

    @staticmethod
    def create_id(tenant_id: str, external_id: str, **_: Any) -> UUID:
        return customer_id_for(UUID(tenant_id), external_id)

    @event("Updated")
    def update(self, changes: dict[str, Any]) -> None:
        """Some of the customer's details changed; `changes` holds only the new values."""
        for name, value in changes.items():
            setattr(self, name, value)


def to_decimal(raw: Any) -> Decimal | None:
    """A usable number from a JSON number or a decimal string; None when there is none."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, Decimal):
        return raw if raw.is_finite() else None
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        return Decimal(str(raw))
    if isinstance(raw, str):
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            return None
        return value if value.is_finite() else None
    return None


@dataclass(frozen=True)
class Filter:
    """One condition an event's property must meet for a meter to count it."""

    property: str
    operator: str
    value: Any = None

    def passes(self, properties: dict[str, Any]) -> bool:
        present = self.property in properties
        if self.operator == "exists":
            return present if self.value in (None, True) else not present
        if not present:
            return self.operator in ("neq", "nin")
        actual = properties[self.property]
        if self.operator in ("eq", "neq"):
            return _equal(actual, self.value) == (self.operator == "eq")
        if self.operator in ("in", "nin"):
            hit = any(_equal(actual, option) for option in self.value)
            return hit == (self.operator == "in")
        left, right = to_decimal(actual), to_decimal(self.value)
        if left is None or right is None:
            return False
        return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[
            self.operator
        ]


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    left, right = to_decimal(actual), to_decimal(expected)
    if (
        left is not None
        and right is not None
        and not (isinstance(actual, str) and isinstance(expected, str))
    ):
        return left == right
    return str(actual) == str(expected)


@dataclass(frozen=True)
class MeterSpec:
    """What a meter counts: which events, which value, how aggregated, grouped by what."""

    key: str
    name: str
    event_type: str
    aggregation: str
    value_property: str | None = None
    unique_property: str | None = None
    filters: tuple[Filter, ...] = ()
    group_by: tuple[str, ...] = ()
    schema: dict[str, str] = field(default_factory=dict)

    def matches(self, event_type: str | None, properties: dict[str, Any]) -> bool:
        """Does an event of this type with these properties feed this meter?"""
        return event_type == self.event_type and all(f.passes(properties) for f in self.filters)

    def value_of(self, value: Decimal, properties: dict[str, Any]) -> Decimal | None:
        """The number this event contributes before aggregation (None: not usable)."""
        if self.value_property is None:
            return value
        return to_decimal(properties.get(self.value_property))

    def unique_of(self, properties: dict[str, Any]) -> str | None:
        if self.unique_property is None or self.unique_property not in properties:
            return None
        return _canonical(properties[self.unique_property])

    def group_of(self, properties: dict[str, Any]) -> tuple[str | None, ...]:
        return tuple(
            None if properties.get(p) is None else _canonical(properties[p]) for p in self.group_by
        )

    def check_event(self, properties: dict[str, Any], prefix: str) -> None:
        """Raise InvalidInput naming the first property that breaks the meter's schema."""
        for name, kind in self.schema.items():
            where = f"{prefix}properties.{name}"
            if name not in properties:
                raise InvalidInput(f"meter {self.key!r} requires property {name!r}", where)
            actual = properties[name]
            if kind == "number" and to_decimal(actual) is None:
                raise InvalidInput(f"meter {self.key!r} needs a number in {name!r}", where)
            if kind == "string" and not isinstance(actual, str):
                raise InvalidInput(f"meter {self.key!r} needs a string in {name!r}", where)
            if kind == "boolean" and not isinstance(actual, bool):
                raise InvalidInput(f"meter {self.key!r} needs a boolean in {name!r}", where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "event_type": self.event_type,
            "aggregation": self.aggregation,
            "value_property": self.value_property,
            "unique_property": self.unique_property,
            "filters": [
                {"property": f.property, "operator": f.operator, "value": f.value}
                for f in self.filters
            ],
            "group_by": list(self.group_by),
            "schema": {"required": dict(self.schema)},
        }


def _canonical(raw: Any) -> str:
    """One string per distinct value, so 2, 2.0 and "2" group together."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    number = None if isinstance(raw, str) else to_decimal(raw)
    if number is not None:
        return format(number.normalize(), "f")
    return str(raw)


def parse_meter(data: dict[str, Any]) -> MeterSpec:
    """Validate a meter definition from its JSON shape; InvalidInput names the field."""
    key = _text(data, "key", limit=100)
    aggregation = str(data.get("aggregation", "")).upper()
    if aggregation not in AGGREGATIONS:
        raise InvalidInput(f"aggregation must be one of {', '.join(AGGREGATIONS)}", "aggregation")
    unique_property = data.get("unique_property")
    if aggregation == "UNIQUE_COUNT" and not unique_property:
        raise InvalidInput("UNIQUE_COUNT needs unique_property", "unique_property")
    group_by = data.get("group_by") or []
    if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
        raise InvalidInput("group_by must be a list of property names", "group_by")
    return MeterSpec(
        key=key,
        name=str(data.get("name") or key),
        event_type=_text(data, "event_type", limit=255),
        aggregation=aggregation,
        value_property=data.get("value_property") or None,
        unique_property=unique_property or None,
        filters=tuple(_filter(f, i) for i, f in enumerate(data.get("filters") or [])),
        group_by=tuple(group_by),
        schema=_schema(data.get("schema")),
    )


def _text(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} is required", name)
    if len(value) > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters", name)
    return value


def _filter(raw: Any, index: int) -> Filter:
    where = f"filters.{index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("property"), str):
        raise InvalidInput("a filter needs a property name", f"{where}.property")
    operator = raw.get("operator")
    if operator not in OPERATORS:
        raise InvalidInput(f"operator must be one of {', '.join(OPERATORS)}", f"{where}.operator")
    value = raw.get("value")
    if operator in ("in", "nin") and not isinstance(value, list):
        raise InvalidInput(f"{operator} needs a list value", f"{where}.value")
    if operator in ("gt", "gte", "lt", "lte") and to_decimal(value) is None:
        raise InvalidInput(f"{operator} needs a number", f"{where}.value")
    if operator in ("eq", "neq") and (value is None or isinstance(value, (list, dict))):
        raise InvalidInput(f"{operator} needs a single value", f"{where}.value")
    if isinstance(value, Decimal):
        value = str(value)
    elif isinstance(value, list):
        value = [str(v) if isinstance(v, Decimal) else v for v in value]
    return Filter(property=raw["property"], operator=operator, value=value)


def _schema(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    required = raw.get("required") if isinstance(raw, dict) else None
    if not isinstance(required, dict):
        raise InvalidInput('schema must be {"required": {property: type}}', "schema.required")
    for name, kind in required.items():
        if kind not in SCHEMA_TYPES:
            raise InvalidInput(
                f"type must be one of {', '.join(SCHEMA_TYPES)}", f"schema.required.{name}"
            )
    return dict(required)


class Meter(Aggregate):
    """A meter: a named aggregation over one event type, owned by one tenant."""

    @event("Defined")
    def __init__(self, tenant_id: str, spec: dict[str, Any]) -> None:
        self.tenant_id = tenant_id
        self.spec = spec
        self.archived = False

    @staticmethod
    def create_id(tenant_id: str, spec: dict[str, Any]) -> UUID:
        return meter_id_for(UUID(tenant_id), spec["key"])

    @event("Updated")
    def update(self, spec: dict[str, Any]) -> None:
        """The meter's definition changed; usage is re-derived from the stored events."""
        self.spec = spec

    @event("Archived")
    def archive(self) -> None:
        """The meter stops counting; its past usage stays queryable."""
        self.archived = True


def meter_index_id_for(tenant_id: UUID) -> UUID:
    return uuid5(tenant_id, "meter-index")


class MeterIndex(Aggregate):
    """The tenant's meter keys by event type, so ingestion finds every meter an event feeds."""

    @event("Started")
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.by_type: dict[str, list[str]] = {}

    @staticmethod
    def create_id(tenant_id: str) -> UUID:
        return meter_index_id_for(UUID(tenant_id))

    @event("Indexed")
    def index(self, key: str, event_type: str, previous_type: str | None = None) -> None:
        """A meter was defined, or moved to another event type."""
        if previous_type is not None and key in self.by_type.get(previous_type, []):
            self.by_type[previous_type].remove(key)
        keys = self.by_type.setdefault(event_type, [])
        if key not in keys:
            keys.append(key)

    @event("Unindexed")
    def unindex(self, key: str, event_type: str) -> None:
        """A meter was archived and no longer receives events."""
        if key in self.by_type.get(event_type, []):
            self.by_type[event_type].remove(key)
