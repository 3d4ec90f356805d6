"""The usage projection: usage events, meter facts and 15-minute buckets.

Meters count every event of their type, whenever the meter was defined: defining a
meter derives its facts from the usage events already projected. Because the log is
applied in order, a rebuild from the log gives the same rows as the live run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
import sqlalchemy as sa
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.aggregation import Partial
from domain.catalog import Customer, Meter, MeterSpec, parse_meter
from domain.instants import to_us
from domain.usage import UsageEvent
from projections.bulk import bulk_insert, pg_copy_merge, upsert
from projections.tables import (
    BUCKET_US,
    customers,
    meter_bucket_values,
    meter_buckets,
    meter_facts,
    meters,
    usage_events,
)

RECORDED = get_topic(UsageEvent.Recorded)
CANCELLED = get_topic(UsageEvent.Cancelled)
METER_DEFINED = get_topic(Meter.Defined)
METER_UPDATED = get_topic(Meter.Updated)
METER_ARCHIVED = get_topic(Meter.Archived)
CUSTOMER_CREATED = get_topic(Customer.Created)
CUSTOMER_UPDATED = get_topic(Customer.Updated)
CATALOG_TOPICS = {
    METER_DEFINED,
    METER_UPDATED,
    METER_ARCHIVED,
    CUSTOMER_CREATED,
    CUSTOMER_UPDATED,
    CANCELLED,
}


def untag(value: Any) -> Any:
    """Undo the library transcoder's tagging of Decimals and datetimes."""
    if isinstance(value, dict):
        if value.keys() == {"_type_", "_data_"}:
            kind, data = value["_type_"], value["_data_"]
            if kind == "decimal_str":
                return Decimal(data)
            if kind == "datetime_iso":
                return datetime.fromisoformat(data)
            if kind == "uuid_hex":
                return UUID(data)
        return {k: untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untag(v) for v in value]
    return value


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@dataclass
class LiveMeter:
    meter_id: str
    tenant_id: str
    spec: MeterSpec
    archived: bool = False


class Fact(NamedTuple):
    """One meter counting one event; fields in `meter_facts` column order."""

    event_id: str
    meter_id: str
    customer: str
    group_key: str
    occurred_us: int
    value: Decimal | None
    uniq: str | None
    position: int


class RecordedState(msgspec.Struct):
    """The parts of a stored `UsageEvent.Recorded` the projection reads; properties and
    metadata stay raw JSON, copied to the read model without re-encoding."""

    tenant_id: str
    idempotency_key: str
    customer: str
    event_type: str | None
    meter: str | None
    value: dict[str, str]
    occurred_at: dict[str, str]
    timestamp: dict[str, str]
    properties: msgspec.Raw
    metadata: msgspec.Raw


BucketKey = tuple[str, str, str, int]
BUCKET_VALUE_KEYS = ("meter_id", "customer", "group_key", "bucket_us", "value")

# The same merge as Partial.merge, in SQL: sums add, extremes compare, and the later
# `last` wins (a tie keeps the row already stored, i.e. the event seen first).
_NEWER = "(excluded.last_us > t.last_us OR t.last_us IS NULL)"
MERGE_BUCKETS = f"""ON CONFLICT (meter_id, customer, group_key, bucket_us) DO UPDATE SET
    events = t.events + excluded.events, n = t.n + excluded.n,
    total = t.total + excluded.total, sum_vt = t.sum_vt + excluded.sum_vt,
    low = LEAST(t.low, excluded.low), high = GREATEST(t.high, excluded.high),
    last_value = CASE WHEN {_NEWER} THEN excluded.last_value ELSE t.last_value END,
    last_us = CASE WHEN {_NEWER} THEN excluded.last_us ELSE t.last_us END"""


class UsageProjection:
    """Builds the usage read models from the log."""

    name = "usage"

    def __init__(self) -> None:
        self._meters: dict[str, LiveMeter] | None = None
        self._decoder = msgspec.json.Decoder()
        self._recorded = msgspec.json.Decoder(RecordedState)
        self._props = msgspec.json.Decoder(dict[str, Any])

    # Meter state, kept in memory and in the `meters` table

    def _load_meters(self, conn: sa.Connection) -> dict[str, LiveMeter]:
        if self._meters is None:
            self._meters = {
                row.meter_id: LiveMeter(
                    row.meter_id, row.tenant_id, parse_meter(json.loads(row.spec)), row.archived
                )
                for row in conn.execute(sa.select(meters))
            }
        return self._meters

    def process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None:
        try:
            self._process(conn, notifications)
        except Exception:
            self._meters = None  # the transaction rolls back; reload meter state next time
            raise

    def _process(self, conn: sa.Connection, notifications: Sequence[Notification]) -> None:
        live = self._load_meters(conn)
        by_type = _index(live)
        rows: list[dict[str, Any]] = []
        facts: list[Fact] = []
        for note in notifications:
            topic = note.topic
            if topic == RECORDED:
                state = self._recorded.decode(note.state)
                row = _usage_row(note, state)
                rows.append(row)
                feeds = by_type.get((state.tenant_id, state.event_type, state.meter))
                if feeds:
                    props = self._props.decode(state.properties)
                    if b'"_type_"' in bytes(state.properties):
                        props = untag(props)
                    for m in feeds:
                        fact = _fact(m, row, props)
                        if fact is not None:
                            facts.append(fact)
            elif topic in CATALOG_TOPICS:
                self._flush(conn, rows, facts)
                rows, facts = [], []
                self._apply_catalog(conn, note, live)
                by_type = _index(live)
        self._flush(conn, rows, facts)

    def _flush(self, conn: sa.Connection, rows: list[tuple[Any, ...]], facts: list[Fact]) -> None:
        if rows:
            bulk_insert(conn, usage_events, rows)
        if facts:
            bulk_insert(conn, meter_facts, facts)
            self._add_to_buckets(conn, facts)

    def _add_to_buckets(self, conn: sa.Connection, facts: list[Fact]) -> None:
        partials: dict[BucketKey, Partial] = {}
        values: set[tuple[str, str, str, int, str]] = set()
        for f in facts:
            key = (f.meter_id, f.customer, f.group_key, f.occurred_us - f.occurred_us % BUCKET_US)
            part = partials.get(key)
            if part is None:
                part = partials[key] = Partial()
            part.events += 1
            if f.value is not None:
                part.add_value(f.value, f.occurred_us)
            if f.uniq is not None:
                values.add((*key, f.uniq))
        value_rows = [
            {"meter_id": m, "customer": c, "group_key": g, "bucket_us": b, "value": v}
            for m, c, g, b, v in values
        ]
        if conn.dialect.name == "postgresql":
            rows = [_bucket_row(k, p) for k, p in partials.items()]
            pg_copy_merge(conn, meter_buckets, rows, MERGE_BUCKETS)
            pg_copy_merge(conn, meter_bucket_values, value_rows, "ON CONFLICT DO NOTHING")
            return
        # SQLite keeps decimals as text, so the merge is done here, exactly.
        for key, old in _read_buckets(conn, list(partials)).items():
            old.merge(partials[key])
            partials[key] = old
        upsert(
            conn,
            meter_buckets,
            [_bucket_row(k, p) for k, p in partials.items()],
            ("meter_id", "customer", "group_key", "bucket_us"),
        )
        upsert(conn, meter_bucket_values, value_rows, BUCKET_VALUE_KEYS, update=False)

    # Catalog events and corrections, applied in log order

    def _apply_catalog(
        self, conn: sa.Connection, note: Notification, live: dict[str, LiveMeter]
    ) -> None:
        state = untag(self._decoder.decode(note.state))
        oid = (
            note.originator_id.hex
            if isinstance(note.originator_id, UUID)
            else str(note.originator_id)
        )
        if note.topic in (CUSTOMER_CREATED, CUSTOMER_UPDATED):
            self._apply_customer(conn, note, oid, state)
        elif note.topic == CANCELLED:
            self._cancel(conn, oid, state.get("reason") or "")
        elif note.topic == METER_DEFINED:
            m = LiveMeter(oid, state["tenant_id"], parse_meter(state["spec"]))
            live[oid] = m
            conn.execute(
                sa.insert(meters).values(
                    tenant_id=m.tenant_id,
                    key=m.spec.key,
                    meter_id=oid,
                    event_type=m.spec.event_type,
                    spec=json_text(state["spec"]),
                    archived=False,
                    position=note.id,
                )
            )
            self._backfill(conn, m)
        elif note.topic == METER_ARCHIVED and oid in live:
            live[oid].archived = True
            conn.execute(
                sa.update(meters)
                .where(meters.c.meter_id == oid)
                .values(archived=True, position=note.id)
            )

    def _apply_customer(
        self, conn: sa.Connection, note: Notification, oid: str, state: dict[str, Any]
    ) -> None:
        if note.topic == CUSTOMER_CREATED:
            conn.execute(
                sa.insert(customers).values(
                    tenant_id=state["tenant_id"],
                    external_id=state["external_id"],
                    customer_id=oid,
                    name=state["name"],
                    email=state["email"],
                    timezone=state["timezone"],
                    currency=state["currency"],
                    position=note.id,
                )
            )
            return
        changes = {
            k: v
            for k, v in state["changes"].items()
            if k in ("name", "email", "timezone", "currency")
        }
        conn.execute(
            sa.update(customers)
            .where(customers.c.customer_id == oid)
            .values(position=note.id, **changes)
        )

    def _backfill(self, conn: sa.Connection, m: LiveMeter) -> None:
        """A new meter counts the matching events already stored."""
        query = (
            sa.select(usage_events)
            .where(
                usage_events.c.tenant_id == m.tenant_id,
                usage_events.c.event_type == m.spec.event_type,
                usage_events.c.meter.is_(None),
                usage_events.c.cancelled_reason.is_(None),
            )
            .order_by(usage_events.c.position)
        )
        batch: list[Fact] = []
        for r in conn.execute(query):
            fact = _fact(m, tuple(r), untag(json.loads(r.properties)))
            if fact is not None:
                batch.append(fact)
            if len(batch) >= 5000:
                self._flush(conn, [], batch)
                batch = []
        self._flush(conn, [], batch)

    def _cancel(self, conn: sa.Connection, event_id: str, reason: str) -> None:
        """Take a cancelled event out of every meter and rebuild the buckets it touched."""
        conn.execute(
            sa.update(usage_events)
            .where(usage_events.c.id == event_id)
            .values(cancelled_reason=reason)
        )
        gone = conn.execute(
            sa.delete(meter_facts)
            .where(meter_facts.c.event_id == event_id)
            .returning(
                meter_facts.c.meter_id,
                meter_facts.c.customer,
                meter_facts.c.group_key,
                meter_facts.c.occurred_us,
            )
        ).all()
        for meter_id, customer, group_key, at_us in gone:
            self._rebuild_bucket(conn, (meter_id, customer, group_key, at_us - at_us % BUCKET_US))

    def _rebuild_bucket(self, conn: sa.Connection, key: BucketKey) -> None:
        meter_id, customer, group_key, bucket = key
        where_b = sa.and_(
            meter_buckets.c.meter_id == meter_id,
            meter_buckets.c.customer == customer,
            meter_buckets.c.group_key == group_key,
            meter_buckets.c.bucket_us == bucket,
        )
        where_v = sa.and_(
            meter_bucket_values.c.meter_id == meter_id,
            meter_bucket_values.c.customer == customer,
            meter_bucket_values.c.group_key == group_key,
            meter_bucket_values.c.bucket_us == bucket,
        )
        conn.execute(sa.delete(meter_buckets).where(where_b))
        conn.execute(sa.delete(meter_bucket_values).where(where_v))
        rest = (
            conn.execute(
                sa.select(meter_facts).where(
                    meter_facts.c.meter_id == meter_id,
                    meter_facts.c.customer == customer,
                    meter_facts.c.group_key == group_key,
                    meter_facts.c.occurred_us >= bucket,
                    meter_facts.c.occurred_us < bucket + BUCKET_US,
                )
            )
            .mappings()
            .all()
        )
        if rest:
            self._add_to_buckets(conn, [Fact(**r) for r in rest])


def _index(live: dict[str, LiveMeter]) -> dict[tuple[str, str | None, str | None], list[LiveMeter]]:
    """Meters by (tenant, event_type, None) and (tenant, None, meter key)."""
    index: dict[tuple[str, str | None, str | None], list[LiveMeter]] = {}
    for m in live.values():
        if m.archived:
            continue
        index.setdefault((m.tenant_id, m.spec.event_type, None), []).append(m)
        index.setdefault((m.tenant_id, None, m.spec.key), []).append(m)
    return index


def _usage_row(note: Notification, state: RecordedState) -> tuple[Any, ...]:
    """A `usage_events` row, in column order."""
    oid = note.originator_id
    metadata = state.metadata
    return (
        oid.hex if isinstance(oid, UUID) else str(oid),
        state.tenant_id,
        state.idempotency_key,
        state.customer,
        state.event_type,
        state.meter,
        Decimal(state.value["_data_"]),
        to_us(datetime.fromisoformat(state.occurred_at["_data_"])),
        to_us(datetime.fromisoformat(state.timestamp["_data_"])),
        bytes(state.properties).decode(),
        None if bytes(metadata) == b"null" else bytes(metadata).decode(),
        note.id,
        None,
    )


_ROW = {c.name: i for i, c in enumerate(usage_events.columns)}
_GROUP_KEYS: dict[tuple[str | None, ...], str] = {}


def _group_key(values: tuple[str | None, ...]) -> str:
    """The stored form of a group (memoised: most events repeat a few groups)."""
    key = _GROUP_KEYS.get(values)
    if key is None:
        if len(_GROUP_KEYS) > 100_000:
            _GROUP_KEYS.clear()
        key = _GROUP_KEYS[values] = json_text(list(values))
    return key


def _fact(m: LiveMeter, row: Sequence[Any], props: dict[str, Any]) -> Fact | None:
    """The fact of meter `m` counting a usage_events row (None: the filters say no)."""
    spec = m.spec
    if row[_ROW["meter"]] is None and not spec.matches(row[_ROW["event_type"]], props):
        return None
    return Fact(
        row[_ROW["id"]],
        m.meter_id,
        row[_ROW["customer"]],
        _group_key(spec.group_of(props)) if spec.group_by else "[]",
        row[_ROW["occurred_us"]],
        spec.value_of(row[_ROW["value"]], props),
        spec.unique_of(props),
        row[_ROW["position"]],
    )


def _read_buckets(conn: sa.Connection, keys: list[BucketKey]) -> dict[BucketKey, Partial]:
    found: dict[BucketKey, Partial] = {}
    cols = (
        meter_buckets.c.meter_id,
        meter_buckets.c.customer,
        meter_buckets.c.group_key,
        meter_buckets.c.bucket_us,
    )
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        query = sa.select(meter_buckets).where(sa.tuple_(*cols).in_(chunk))
        for r in conn.execute(query):
            found[(r.meter_id, r.customer, r.group_key, r.bucket_us)] = bucket_partial(r)
    return found


def bucket_partial(r: Any) -> Partial:
    return Partial(
        events=r.events,
        n=r.n,
        total=r.total,
        low=r.low,
        high=r.high,
        last_us=r.last_us,
        last_value=r.last_value,
        sum_vt=r.sum_vt,
    )


def _bucket_row(key: BucketKey, p: Partial) -> dict[str, Any]:
    return {
        "meter_id": key[0],
        "customer": key[1],
        "group_key": key[2],
        "bucket_us": key[3],
        "events": p.events,
        "n": p.n,
        "total": p.total,
        "low": p.low,
        "high": p.high,
        "last_us": p.last_us,
        "last_value": p.last_value,
        "sum_vt": p.sum_vt,
    }
