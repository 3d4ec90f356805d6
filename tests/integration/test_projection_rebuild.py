"""Read models are disposable: dropped and rebuilt from the log, they are identical."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from projections.compare import diff, dump
from projections.runner import Runner, create_tables
from projections.tables import USAGE_TABLES, metadata
from projections.usage import UsageProjection
from tests.integration.helpers import ingest, item, project
from workers.runtime import Runtime

METERS = [
    {"key": "calls", "event_type": "api", "aggregation": "COUNT"},
    {"key": "tokens", "event_type": "api", "aggregation": "SUM", "value_property": "tokens",
     "group_by": ["model"]},
    {"key": "peak", "event_type": "api", "aggregation": "MAX", "value_property": "tokens"},
    {"key": "users", "event_type": "api", "aggregation": "UNIQUE_COUNT",
     "unique_property": "user"},
    {"key": "storage", "event_type": "gb", "aggregation": "WEIGHTED_SUM"},
]


def _workload(rt: Runtime, tenant, now: datetime, n: int, seed: int) -> None:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        at = now - timedelta(seconds=rng.randrange(0, 86400 * 3), microseconds=rng.randrange(10**6))
        if i % 7 == 0:
            items.append(item(f"gb{seed}-{i}", f"c{rng.randrange(5)}", event_type="gb",
                              value=Decimal(rng.randrange(-5, 20)), timestamp=at))
        else:
            items.append(item(f"e{seed}-{i}", f"c{rng.randrange(5)}", event_type="api",
                              timestamp=at, properties={
                                  "tokens": Decimal(rng.randrange(1, 5000)) / 10,
                                  "model": rng.choice(["a", "b", "c"]),
                                  "user": f"u{rng.randrange(40)}"}))
    for start in range(0, n, 500):
        ingest(rt, tenant, items[start:start + 500], now=now)


def test_dropped_read_models_rebuild_row_for_row(runtime: Runtime) -> None:
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    now = datetime.now(UTC)
    runtime.catalog.create_meter(tenant, METERS[0])
    _workload(runtime, tenant, now, 1500, seed=1)
    project(runtime)
    for spec in METERS[1:]:  # defined after events: counts the stored ones too
        runtime.catalog.create_meter(tenant, spec)
    _workload(runtime, tenant, now, 1500, seed=2)
    first = ingest(runtime, tenant, [item("to-cancel", event_type="api",
                                          properties={"tokens": 7, "model": "a"})], now=now)
    runtime.usage.run_once()
    event = runtime.ledger.repository.get(first[0].event_id)
    event.cancel(reason="test")
    runtime.ledger.save(event)
    project(runtime)
    with runtime.engine.connect() as conn:
        live = dump(conn, USAGE_TABLES)
    assert len(live["meter_facts"]) > 3000

    metadata.drop_all(runtime.engine)
    create_tables(runtime.engine)
    fresh = Runner(runtime.ledger.recorder, runtime.engine, UsageProjection(), batch_size=700)
    fresh.catch_up()
    with runtime.engine.connect() as conn:
        replayed = dump(conn, USAGE_TABLES)
    assert diff(live, replayed) == []


def test_a_changed_number_is_reported(runtime: Runtime) -> None:
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    runtime.catalog.create_meter(tenant, METERS[1])
    _workload(runtime, tenant, datetime.now(UTC), 200, seed=3)
    project(runtime)
    with runtime.engine.begin() as conn:
        before = dump(conn, USAGE_TABLES)
        conn.exec_driver_sql(
            "UPDATE meter_buckets SET total = '12345' WHERE bucket_us = "
            "(SELECT MIN(bucket_us) FROM meter_buckets)")
        after = dump(conn, USAGE_TABLES)
    found = diff(before, after)
    assert len(found) >= 1
    assert found[0].table == "meter_buckets" and found[0].column == "total"
    assert found[0].replayed == Decimal("12345")
