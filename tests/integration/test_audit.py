"""`xtopay audit verify` and `rebuild` over real stores."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from projections.compare import dump
from projections.tables import USAGE_TABLES, Dec
from tests.integration.helpers import project
from tests.integration.test_projection_rebuild import METERS, _workload
from workers.audit import rebuild, verify
from workers.runtime import Runtime


def _populated(runtime: Runtime):
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    runtime.catalog.create_customer(tenant, {"external_id": "c1", "timezone": "Asia/Kolkata"})
    for spec in METERS:
        runtime.catalog.create_meter(tenant, spec)
    _workload(runtime, tenant, datetime.now(UTC), 1200, seed=7)
    project(runtime)
    return tenant


def test_verify_passes_on_untouched_read_models(runtime: Runtime) -> None:
    _populated(runtime)
    assert verify(runtime) == []


def _change_one_number(runtime: Runtime, table: sa.Table, column: str, sign: int = 1) -> int:
    keys = list(table.primary_key.columns)
    with runtime.engine.begin() as conn:
        query = sa.select(table).where(table.c[column].is_not(None))
        row = conn.execute(query.order_by(*keys).limit(1)).first()
        assert row is not None
        where = [k == getattr(row, k.name) for k in keys]
        step = sign * (Decimal("0.01") if isinstance(table.c[column].type, Dec) else 1)
        return conn.execute(
            sa.update(table).where(*where).values({column: getattr(row, column) + step})
        ).rowcount


def test_verify_catches_one_changed_number_in_any_table(runtime: Runtime) -> None:
    _populated(runtime)
    numbers = [
        (t, c.name)
        for t in USAGE_TABLES
        for c in t.columns
        if isinstance(c.type, (Dec, sa.BigInteger)) and not c.primary_key
    ]
    assert len(numbers) >= 15
    for table, column in numbers:
        assert _change_one_number(runtime, table, column) == 1
        found = verify(runtime)
        assert [(d.table, d.column) for d in found] == [(table.name, column)], found
        assert found[0].live - found[0].replayed in (Decimal("0.01"), 1)
        _change_one_number(runtime, table, column, sign=-1)
    assert verify(runtime) == []


def test_rebuild_restores_the_live_read_models(runtime: Runtime) -> None:
    _populated(runtime)
    with runtime.engine.connect() as conn:
        before = dump(conn, USAGE_TABLES)
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM meter_buckets")
        conn.exec_driver_sql("UPDATE meter_facts SET value = '5'")
    assert len(verify(runtime)) > 0
    positions = rebuild(runtime)
    assert positions["usage"] == runtime.ledger.recorder.max_notification_id()
    with runtime.engine.connect() as conn:
        after = dump(conn, USAGE_TABLES)
    assert after == before
    assert after["meter_buckets"]
    assert all(isinstance(r["total"], Decimal) for r in after["meter_buckets"].values())
