"""Budgets over real stores: crossings once per period, blocking, the period reset,
usage kept while blocked, and idempotence after a crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.budgets import Budget
from domain.errors import NotFound
from domain.periods import calendar_month
from projections.runner import save_position
from tests.integration.alerts_support import access, events_of, settle
from tests.integration.helpers import ingest, item
from workers.audit import verify
from workers.runtime import Runtime

METER = {"key": "tokens", "event_type": "llm", "aggregation": "SUM", "value_property": "tokens"}


def _setup(rt: Runtime, **budget):
    tenant = rt.catalog.create_tenant("acme").tenant_id
    rt.catalog.create_customer(tenant, {"external_id": "c1"})
    rt.catalog.create_meter(tenant, METER)
    outcome = rt.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "meter": "tokens", "units": 100, **budget}
    )
    assert outcome.created
    settle(rt)
    return tenant


def _use(rt: Runtime, tenant, *amounts: int, prefix: str = "e") -> None:
    items = [
        item(f"{prefix}{i}", event_type="llm", properties={"tokens": a})
        for i, a in enumerate(amounts)
    ]
    assert all(o.status == "accepted" for o in ingest(rt, tenant, items))


def test_one_batch_over_80_and_100_records_each_crossing_once(runtime: Runtime) -> None:
    tenant = _setup(runtime)
    _use(runtime, tenant, 30, 60, 60)  # 50 % -> 150 % within one batch
    settle(runtime)
    crossed = events_of(runtime, Budget.ThresholdCrossed)
    assert [(e.threshold, e.measured) for e in crossed] == [(80, Decimal(150)), (100, Decimal(150))]
    _use(runtime, tenant, 500, prefix="more")
    settle(runtime)
    assert len(events_of(runtime, Budget.ThresholdCrossed)) == 2
    assert access(runtime, tenant, "c1", "tokens") == []  # no block_at: alerts only
    assert events_of(runtime, Budget.AccessBlocked) == []


def test_block_keeps_usage_and_the_next_period_restores(runtime: Runtime) -> None:
    tenant = _setup(runtime, block_at=100)
    _use(runtime, tenant, 99)
    settle(runtime)
    assert access(runtime, tenant, "c1", "tokens") == []
    _use(runtime, tenant, 1, prefix="x")
    settle(runtime)
    reasons = access(runtime, tenant, "c1", "tokens")
    assert [(r["type"], r["threshold"], r["measured"], r["limit"]) for r in reasons] == [
        ("budget_exceeded", 100, "100", "100")
    ]
    assert access(runtime, tenant, "c1") == reasons  # without a meter: every block counts
    assert access(runtime, tenant, "c1", "other-meter") == []  # a units budget blocks its meter

    _use(runtime, tenant, 5, 6, 7, prefix="blocked")  # stored and counted while blocked
    settle(runtime)
    with runtime.read_engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT COUNT(*) FROM usage_events").scalar()
    assert stored == 5
    assert len(events_of(runtime, Budget.AccessBlocked)) == 1

    period = calendar_month(datetime.now(UTC), "UTC")
    next_month = period.end + timedelta(seconds=1)
    assert runtime.alerts.processor.tick(now=period.start + timedelta(days=1)) == 0
    assert runtime.alerts.processor.tick(now=next_month) == 1
    runtime.alerts.access_runner.catch_up()
    restored = events_of(runtime, Budget.AccessRestored)
    assert [(e.reason, e.period_start) for e in restored] == [("period_reset", period.end)]
    assert access(runtime, tenant, "c1", "tokens") == []
    assert runtime.alerts.processor.tick(now=next_month) == 0


def test_a_replayed_batch_records_nothing_twice(runtime: Runtime) -> None:
    tenant = _setup(runtime, block_at=100)
    _use(runtime, tenant, 150)
    settle(runtime)
    before = runtime.ledger.recorder.max_notification_id()
    with runtime.engine.begin() as conn:  # a processor that crashed before saving its position
        save_position(conn, "budgets", 0)
    runtime.alerts.processor.catch_up()
    assert runtime.ledger.recorder.max_notification_id() == before


def test_raising_the_limit_restores_access(runtime: Runtime) -> None:
    tenant = _setup(runtime, block_at=100)
    _use(runtime, tenant, 120)
    settle(runtime)
    assert access(runtime, tenant, "c1", "tokens")
    again = runtime.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "meter": "tokens", "units": 200, "block_at": 100}
    )
    assert not again.created and again.position is not None
    settle(runtime)
    assert [e.reason for e in events_of(runtime, Budget.AccessRestored)] == ["budget_changed"]
    assert access(runtime, tenant, "c1", "tokens") == []
    unchanged = runtime.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "meter": "tokens", "units": 200, "block_at": 100}
    )
    assert unchanged.position is None


def test_a_cancelled_event_can_lift_the_block(runtime: Runtime) -> None:
    tenant = _setup(runtime, block_at=100)
    outcomes = ingest(
        runtime,
        tenant,
        [
            item("big", event_type="llm", properties={"tokens": 90}),
            item("small", event_type="llm", properties={"tokens": 20}),
        ],
    )
    settle(runtime)
    assert access(runtime, tenant, "c1", "tokens")
    event = runtime.ledger.repository.get(outcomes[0].event_id)
    event.cancel(reason="sent twice")
    runtime.ledger.save(event)
    settle(runtime)
    assert [e.reason for e in events_of(runtime, Budget.AccessRestored)] == ["usage_corrected"]
    assert access(runtime, tenant, "c1", "tokens") == []


def test_money_budgets_are_kept_and_measured_as_zero(runtime: Runtime) -> None:
    tenant = _setup(runtime)
    money = runtime.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "amount": "50", "block_at": 100}
    )
    assert money.created and money.budget.currency == "USD" and money.budget.kind == "money"
    _use(runtime, tenant, 1000)
    settle(runtime)
    assert [e.meter for e in events_of(runtime, Budget.ThresholdCrossed)] == ["tokens", "tokens"]
    assert access(runtime, tenant, "c1", "tokens") == []


def test_unknown_customer_or_meter(runtime: Runtime) -> None:
    tenant = _setup(runtime)
    with pytest.raises(NotFound) as caught:
        runtime.alerts.budgets.set_budget(tenant, {"customer": "nobody", "amount": 5})
    assert caught.value.field == "customer"
    with pytest.raises(NotFound) as caught:
        runtime.alerts.budgets.set_budget(tenant, {"customer": "c1", "meter": "x", "units": 5})
    assert caught.value.field == "meter"


def test_audit_verify_covers_budgets_and_access(runtime: Runtime) -> None:
    tenant = _setup(runtime, block_at=100)
    _use(runtime, tenant, 120)
    settle(runtime)
    assert verify(runtime) == []
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE access_state SET blocked = false")
    assert {d.table for d in verify(runtime)} == {"access_state"}
