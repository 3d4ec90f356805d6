"""Read-model tables (SQLAlchemy Core). Disposable: rebuilt from the event log."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()


class Dec(TypeDecorator[Decimal]):
    """Exact decimals: NUMERIC on PostgreSQL, text on SQLite (which has no exact type)."""

    impl = sa.String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(asdecimal=True))
        return dialect.type_descriptor(sa.String(80))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


ID = sa.String(32)  # uuid hex

tracking = sa.Table(
    "projection_tracking",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("external_id", sa.String(255), primary_key=True),
    sa.Column("customer_id", ID, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

meters = sa.Table(
    "meters",
    metadata,
    sa.Column("tenant_id", ID, primary_key=True),
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("meter_id", ID, nullable=False, unique=True),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("archived", sa.Boolean, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("tenant_id", ID, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=False),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(255)),
    sa.Column("meter", sa.String(100)),
    sa.Column("value", Dec, nullable=False),
    sa.Column("occurred_us", sa.BigInteger, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("properties", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("cancelled_reason", sa.Text),
    sa.Index("usage_events_by_time", "tenant_id", "occurred_us"),
    sa.Index("usage_events_by_customer", "tenant_id", "customer", "occurred_us"),
)

# One row per (meter, event) the meter counts: the trace behind every total.
meter_facts = sa.Table(
    "meter_facts",
    metadata,
    # event_id first: a cancellation finds an event's facts through the primary key
    sa.Column("event_id", ID, primary_key=True),
    sa.Column("meter_id", ID, primary_key=True),
    sa.Column("customer", sa.String(255), nullable=False),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("occurred_us", sa.BigInteger, nullable=False),
    sa.Column("value", Dec),
    sa.Column("uniq", sa.Text),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("meter_facts_by_time", "meter_id", "customer", "occurred_us"),
)

# Partial aggregates per 15-minute bucket: every IANA offset is a multiple of 15 minutes,
# so hour, day and month windows in any zone are unions of whole buckets.
meter_buckets = sa.Table(
    "meter_buckets",
    metadata,
    sa.Column("meter_id", ID, primary_key=True),
    sa.Column("customer", sa.String(255), primary_key=True),
    sa.Column("group_key", sa.Text, primary_key=True),
    sa.Column("bucket_us", sa.BigInteger, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("total", Dec, nullable=False),
    sa.Column("low", Dec),
    sa.Column("high", Dec),
    sa.Column("last_us", sa.BigInteger),
    sa.Column("last_value", Dec),
    sa.Column("sum_vt", Dec, nullable=False),
)

meter_bucket_values = sa.Table(
    "meter_bucket_values",
    metadata,
    sa.Column("meter_id", ID, primary_key=True),
    sa.Column("customer", sa.String(255), primary_key=True),
    sa.Column("group_key", sa.Text, primary_key=True),
    sa.Column("bucket_us", sa.BigInteger, primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
)

BUCKET_US = 15 * 60 * 1_000_000
USAGE_TABLES = (customers, meters, usage_events, meter_facts, meter_buckets, meter_bucket_values)
