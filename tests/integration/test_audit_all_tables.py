"""`xtopay audit verify` catches one changed number in any read-model table, the
billing, wallet, budget and webhook tables included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from projections.tables import Dec
from tests.integration.alerts_support import settle
from tests.integration.billing_helpers import bill, send, setup, subscribe
from workers.audit import projection_specs, verify
from workers.runtime import Runtime


def _populate(rt: Runtime) -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    tenant = setup(rt, interval="week")
    subscribe(rt, tenant, start)
    wallet = rt.wallets.open(
        tenant, {"customer": "c1", "currency": "USD", "low_balance_threshold": "1"}
    )
    rt.wallets.top_up(tenant, wallet.id, {"amount": "3", "idempotency_key": "t"})
    rt.alerts.webhooks.register_endpoint(
        tenant, {"url": "http://127.0.0.1:9/h", "event_types": ["*"]}
    )
    rt.alerts.budgets.set_budget(tenant, {"customer": "c1", "meter": "calls", "units": 10})
    for day in range(3):
        at = start + timedelta(days=day)
        send(rt, tenant, at, at, f"e{day}")
    bill(rt, start + timedelta(days=7, hours=2))
    rt.wallet_book.catch_up()
    settle(rt, start + timedelta(days=7, hours=2))


def test_one_changed_number_in_any_table_is_caught(runtime: Runtime) -> None:
    _populate(runtime)
    assert verify(runtime) == []
    checked = []
    for spec in projection_specs():
        for table in spec.tables:
            numbers = [
                c
                for c in table.columns
                if not c.primary_key and isinstance(c.type, (Dec, sa.BigInteger, sa.Integer))
            ]
            with runtime.engine.connect() as conn:
                row = conn.execute(sa.select(table).limit(1)).first()
            column = next(
                (c for c in numbers if row is not None and getattr(row, c.name) is not None), None
            )
            if column is None:
                continue
            step = Decimal("0.01") if isinstance(column.type, Dec) else 1
            keys = [k == getattr(row, k.name) for k in table.primary_key.columns]
            with runtime.engine.begin() as conn:
                conn.execute(
                    sa.update(table)
                    .where(*keys)
                    .values({column.name: getattr(row, column.name) + step})
                )
            found = verify(runtime)
            assert [(d.table, d.column) for d in found] == [(table.name, column.name)], found
            with runtime.engine.begin() as conn:
                conn.execute(
                    sa.update(table).where(*keys).values({column.name: getattr(row, column.name)})
                )
            checked.append(table.name)
    assert {
        "invoices",
        "invoice_lines",
        "wallets",
        "wallet_transactions",
        "budgets",
        "meter_buckets",
        "usage_events",
    } <= set(checked), checked
    assert verify(runtime) == []
