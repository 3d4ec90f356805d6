"""Queries over the usage read models (the query API answers only from these)."""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from domain.aggregation import EXACT, ZERO, Partial
from domain.catalog import MeterSpec, parse_meter
from domain.errors import InvalidInput, NotFound
from domain.instants import from_us, to_us
from domain.periods import windows as make_windows
from projections.tables import (
    BUCKET_US,
    customers,
    meter_bucket_values,
    meter_buckets,
    meter_facts,
    meters,
    usage_events,
)
from projections.usage import bucket_partial

Key = tuple[str, tuple[str | None, ...]]  # customer, group values


@dataclass(frozen=True)
class MeterRow:
    meter_id: str
    spec: MeterSpec
    archived: bool


@dataclass(frozen=True)
class UsageRow:
    window_start: datetime
    window_end: datetime
    customer: str
    group: dict[str, str | None]
    value: Decimal


def meter_row(conn: sa.Connection, tenant: str, key: str) -> MeterRow:
    row = conn.execute(
        sa.select(meters).where(meters.c.tenant_id == tenant, meters.c.key == key)
    ).first()
    if row is None:
        raise NotFound(f"no meter {key!r}", "meter")
    return MeterRow(row.meter_id, parse_meter(json.loads(row.spec)), row.archived)


def list_meters(conn: sa.Connection, tenant: str) -> list[MeterRow]:
    rows = conn.execute(
        sa.select(meters).where(meters.c.tenant_id == tenant).order_by(meters.c.key)
    )
    return [MeterRow(r.meter_id, parse_meter(json.loads(r.spec)), r.archived) for r in rows]


def customer_row(conn: sa.Connection, tenant: str, external_id: str) -> Any:
    return conn.execute(
        sa.select(customers).where(
            customers.c.tenant_id == tenant, customers.c.external_id == external_id
        )
    ).first()


def meter_usage(
    conn: sa.Connection,
    meter: MeterRow,
    start: datetime,
    end: datetime,
    *,
    customer: str | None = None,
    window_size: str | None = None,
    tz: str = "UTC",
    group_by: Sequence[str] = (),
) -> list[UsageRow]:
    """Usage per window (or one row for the whole range) per customer and group."""
    unknown = [g for g in group_by if g not in meter.spec.group_by]
    if unknown:
        raise InvalidInput(
            f"group_by {unknown[0]!r} is not a group of meter {meter.spec.key!r} "
            f"(it groups by {', '.join(meter.spec.group_by) or 'nothing'})",
            "group_by",
        )
    if end <= start:
        raise InvalidInput("to must be after from", "to")
    try:
        spans = make_windows(start, end, window_size, tz) if window_size else [(start, end)]
    except ValueError as error:
        raise InvalidInput(str(error), "window_size") from None
    bounds = [(to_us(a), to_us(b)) for a, b in spans]
    keep = [meter.spec.group_by.index(g) for g in group_by]
    parts, levels = _partials(conn, meter, bounds, customer, keep)
    return _rows(meter.spec, spans, bounds, parts, levels, group_by)


def meter_total(
    conn: sa.Connection, meter: MeterRow, customer: str, start: datetime, end: datetime
) -> Decimal:
    """The customer's single number for the meter over [start, end)."""
    rows = meter_usage(conn, meter, start, end, customer=customer)
    return rows[0].value if rows else ZERO


def _partials(
    conn: sa.Connection,
    meter: MeterRow,
    bounds: list[tuple[int, int]],
    customer: str | None,
    keep: list[int],
) -> tuple[dict[tuple[int, Key], Partial], dict[Key, Decimal]]:
    """Merge buckets and edge facts into one Partial per (window index, key)."""
    start, end = bounds[0][0], bounds[-1][1]
    starts = [a for a, _ in bounds]
    aligned = all(a % BUCKET_US == 0 for a, _ in bounds[1:])
    inner_from = -(-start // BUCKET_US) * BUCKET_US
    inner_to = end - end % BUCKET_US
    if not aligned or inner_from >= inner_to:
        inner_from = inner_to = start
    parts: dict[tuple[int, Key], Partial] = {}
    want_values = meter.spec.aggregation == "UNIQUE_COUNT"

    def slot(at_us: int, cust: str, group_key: str) -> Partial:
        index = bisect.bisect_right(starts, at_us) - 1
        key = (cust, _project(group_key, keep))
        part = parts.get((index, key))
        if part is None:
            part = parts[(index, key)] = Partial()
        return part

    for r in _buckets(conn, meter.meter_id, customer, inner_from, inner_to):
        slot(r.bucket_us, r.customer, r.group_key).merge(bucket_partial(r))
    if want_values:
        for r in _bucket_values(conn, meter.meter_id, customer, inner_from, inner_to):
            slot(r.bucket_us, r.customer, r.group_key).values.add(r.value)
    for lo, hi in ((start, inner_from), (inner_to, end)):
        if lo < hi:
            for f in _facts(conn, meter.meter_id, customer, lo, hi):
                slot(f.occurred_us, f.customer, f.group_key).add(f.value, f.occurred_us, f.uniq)
    levels = (
        _levels_before(conn, meter, customer, start, keep)
        if meter.spec.aggregation == "WEIGHTED_SUM"
        else {}
    )
    return parts, levels


def _levels_before(
    conn: sa.Connection, meter: MeterRow, customer: str | None, start: int, keep: list[int]
) -> dict[Key, Decimal]:
    """For WEIGHTED_SUM: the level each key had reached before the range starts."""
    floor = start - start % BUCKET_US
    levels: dict[Key, Decimal] = {}
    for r in _buckets(conn, meter.meter_id, customer, None, floor):
        key = (r.customer, _project(r.group_key, keep))
        levels[key] = EXACT.add(levels.get(key, ZERO), r.total)
    for f in _facts(conn, meter.meter_id, customer, floor, start):
        if f.value is not None:
            key = (f.customer, _project(f.group_key, keep))
            levels[key] = EXACT.add(levels.get(key, ZERO), f.value)
    return levels


def _rows(
    spec: MeterSpec,
    spans: list[tuple[datetime, datetime]],
    bounds: list[tuple[int, int]],
    parts: dict[tuple[int, Key], Partial],
    levels: dict[Key, Decimal],
    group_by: Sequence[str],
) -> list[UsageRow]:
    rows: list[UsageRow] = []
    keys = sorted(
        {k for _, k in parts} | set(levels), key=lambda k: (k[0], [v or "" for v in k[1]])
    )
    for key in keys:
        level = levels.get(key, ZERO)
        for index, (a, b) in enumerate(bounds):
            part = parts.get((index, key))
            if part is None and not (spec.aggregation == "WEIGHTED_SUM" and level):
                continue
            part = part or Partial()
            value = part.value(spec.aggregation, a, b, level)
            level = EXACT.add(level, part.total)
            if value is None:
                continue
            rows.append(
                UsageRow(
                    spans[index][0],
                    spans[index][1],
                    key[0],
                    dict(zip(group_by, key[1], strict=True)),
                    value,
                )
            )
    rows.sort(key=lambda r: (r.window_start, r.customer))
    return rows


def _project(group_key: str, keep: list[int]) -> tuple[str | None, ...]:
    values = json.loads(group_key)
    return tuple(values[i] for i in keep)


def _buckets(
    conn: sa.Connection, meter_id: str, customer: str | None, lo: int | None, hi: int
) -> Any:
    q = sa.select(meter_buckets).where(
        meter_buckets.c.meter_id == meter_id, meter_buckets.c.bucket_us < hi
    )
    if lo is not None:
        q = q.where(meter_buckets.c.bucket_us >= lo)
    if customer is not None:
        q = q.where(meter_buckets.c.customer == customer)
    return conn.execute(q)


def _bucket_values(
    conn: sa.Connection, meter_id: str, customer: str | None, lo: int, hi: int
) -> Any:
    t = meter_bucket_values
    q = sa.select(t).where(t.c.meter_id == meter_id, t.c.bucket_us >= lo, t.c.bucket_us < hi)
    if customer is not None:
        q = q.where(t.c.customer == customer)
    return conn.execute(q)


def _facts(conn: sa.Connection, meter_id: str, customer: str | None, lo: int, hi: int) -> Any:
    t = meter_facts
    q = sa.select(t).where(t.c.meter_id == meter_id, t.c.occurred_us >= lo, t.c.occurred_us < hi)
    if customer is not None:
        q = q.where(t.c.customer == customer)
    return conn.execute(q.order_by(t.c.position))


def earliest_fact(conn: sa.Connection, meter: MeterRow) -> datetime | None:
    """When the meter's first counted event happened (None: it has counted nothing)."""
    first = conn.execute(
        sa.select(sa.func.min(meter_facts.c.occurred_us)).where(
            meter_facts.c.meter_id == meter.meter_id
        )
    ).scalar()
    return None if first is None else from_us(first)


def list_usage_events(
    conn: sa.Connection,
    tenant: str,
    *,
    customer: str | None,
    event_type: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    after: tuple[int, str] | None,
) -> list[Any]:
    """Stored usage events, oldest first, keyset-paginated by (timestamp, id)."""
    t = usage_events
    q = sa.select(t).where(t.c.tenant_id == tenant)
    if customer:
        q = q.where(t.c.customer == customer)
    if event_type:
        q = q.where(t.c.event_type == event_type)
    if start:
        q = q.where(t.c.occurred_us >= to_us(start))
    if end:
        q = q.where(t.c.occurred_us < to_us(end))
    if after:
        q = q.where(
            sa.tuple_(t.c.occurred_us, t.c.id)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    q = q.order_by(t.c.occurred_us, t.c.id).limit(limit)
    return list(conn.execute(q).mappings())


__all__ = ["from_us", "list_usage_events", "meter_row", "meter_total", "meter_usage"]
