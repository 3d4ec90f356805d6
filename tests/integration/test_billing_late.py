"""Usage arriving after its period closed follows the tenant's late-event policy, and the
decision is itself a recorded event."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from application.settings import Settings
from domain.billing import Subscription
from projections.billing_view import list_late_usage
from tests.integration.billing_helpers import (
    DAY,
    HOUR,
    WEEK,
    bill,
    invoices,
    line,
    send,
    setup,
    subscribe,
    trace,
)
from workers.billing import upcoming_draft
from workers.runtime import Runtime

D = Decimal
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
TOKENS = [{"key": "calls", "event_type": "api", "aggregation": "SUM"}]


def late_rows(rt: Runtime, tenant, policy: str | None = None) -> list:
    with rt.read_engine.connect() as conn:
        return list_late_usage(
            conn, tenant.hex, customer=None, policy=policy, limit=100, after=None
        )


def closed_week(rt: Runtime, **plan) -> tuple:
    """Week one billed with 2 units, then a late event of 5 units for it."""
    tenant = setup(rt, meters=TOKENS, **plan)
    subscription = subscribe(rt, tenant, START)
    send(rt, tenant, START + DAY, START + 8 * DAY, "on-time", value=D(2))
    bill(rt, START + WEEK + HOUR)
    late = send(rt, tenant, START + 2 * DAY, START + 9 * DAY, "late", value=D(5))
    return tenant, subscription, late


def test_next_period_bills_late_usage_in_the_open_period_with_its_own_timestamp(
    runtime: Runtime,
) -> None:
    tenant, subscription, late = closed_week(runtime)
    send(runtime, tenant, START + 10 * DAY, START + 10 * DAY, "week-two", value=D(1))
    result = bill(runtime, START + 10 * DAY)  # week two still open
    assert result.late_events == 1 and result.invoices == []
    [row] = late_rows(runtime, tenant)
    [original] = invoices(runtime, tenant)
    assert (row.policy, row.original_invoice_id) == ("next_period", original["id"][4:])
    assert line(original, "calls")["quantity"] == "2"  # a finalized invoice never changes

    with runtime.read_engine.connect() as conn:
        upcoming = upcoming_draft(conn, tenant.hex, "c1", START + 10 * DAY, "next_period")
    assert upcoming is not None and upcoming[3].lines[0].quantity == 6

    bill(runtime, START + 2 * WEEK + HOUR)
    second = invoices(runtime, tenant)[1]
    calls = line(second, "calls")
    assert calls["quantity"] == "6"
    traced = trace(runtime, second, calls)
    assert (late.hex, START + 2 * DAY, D(5)) in traced  # traced with its original time
    assert sum(v for _, _, v in traced) == 6
    bill(runtime, START + 3 * WEEK + HOUR)
    assert line(invoices(runtime, tenant)[2], "calls")["quantity"] == "0"  # billed once

    decided = [
        e
        for e in runtime.ledger.events.get(subscription.id)
        if isinstance(e, Subscription.LateUsageDecided)
    ]
    assert [(d.policy, d.events) for d in decided] == [
        (
            "next_period",
            [{"event_id": late.hex, "period_start_us": decided[0].events[0]["period_start_us"]}],
        )
    ]


def test_current_period_issues_adjustments_referencing_the_original(runtime: Runtime) -> None:
    tenant, _, late = closed_week(runtime, minimum_amount="4")
    runtime.billing.set_late_event_policy(tenant, "current_period")
    bill(runtime, START + 9 * DAY)
    original, adjustment = invoices(runtime, tenant)
    assert original["total"] == "4.00"  # 2.00 usage + 2.00 true-up, unchanged
    assert adjustment["kind"] == "adjustment"
    assert adjustment["corrects"] == original["id"]
    assert adjustment["period_start"] == original["period_start"]
    assert [(x["type"], x["quantity"], x["amount"]) for x in adjustment["lines"]] == [
        ("usage_adjustment", "5", "5.00"),
        ("minimum_adjustment", "1", "-2.00"),  # the true-up is no longer owed
    ]
    assert adjustment["total"] == "3.00"  # 4.00 + 3.00 = 7.00, as if billed on time
    assert [(e, v) for e, _, v in trace(runtime, adjustment, adjustment["lines"][0])] == [
        (late.hex, D(5))
    ]
    [row] = late_rows(runtime, tenant)
    assert row.adjustment_invoice_id == adjustment["id"][4:]

    send(runtime, tenant, START + 3 * DAY, START + 9 * DAY, "later", value=D(1))
    bill(runtime, START + 9 * DAY)
    third = invoices(runtime, tenant)[2]
    assert (third["kind"], third["corrects"], third["total"]) == (
        "adjustment",
        original["id"],
        "1.00",
    )
    assert third["id"] != adjustment["id"]


def test_a_late_maximum_moves_the_deciding_event(runtime: Runtime) -> None:
    tenant = setup(runtime, meters=[{"key": "calls", "event_type": "api", "aggregation": "MAX"}])
    subscribe(runtime, tenant, START)
    first = send(runtime, tenant, START + DAY, START + 8 * DAY, "a", value=D(3))
    bill(runtime, START + WEEK + HOUR)
    runtime.billing.set_late_event_policy(tenant, "current_period")
    peak = send(runtime, tenant, START + 2 * DAY, START + 9 * DAY, "b", value=D(8))
    bill(runtime, START + 9 * DAY)
    adjustment = invoices(runtime, tenant)[1]
    delta = adjustment["lines"][0]
    assert (delta["quantity"], delta["amount"]) == ("5", "5.00")
    assert [(e, v) for e, _, v in trace(runtime, adjustment, delta)] == [
        (first.hex, D(-3)),
        (peak.hex, D(8)),
    ]


@pytest.fixture
def ignoring(database_url: str) -> Iterator[Runtime]:
    """A server whose default policy (XTOPAY_LATE_EVENT_POLICY) is ignore."""
    rt = Runtime(Settings(database_url=database_url, late_event_policy="ignore"))
    yield rt
    rt.close()


def test_ignore_stores_and_lists_late_usage_but_never_bills_it(ignoring: Runtime) -> None:
    rt = ignoring
    tenant, _, late = closed_week(rt)
    bill(rt, START + 2 * WEEK + HOUR)
    first, second = invoices(rt, tenant)
    assert line(second, "calls")["quantity"] == "0"
    assert all(i["kind"] == "regular" for i in (first, second))
    [row] = late_rows(rt, tenant, "ignore")
    assert (row.event_id, row.policy, row.value) == (late.hex, "ignore", D(5))
    # a tenant's own setting wins over the server default
    rt.billing.set_late_event_policy(tenant, "current_period")
    send(rt, tenant, START + DAY, START + 16 * DAY, "late-2", value=D(4))
    bill(rt, START + 16 * DAY)
    assert invoices(rt, tenant)[-1]["kind"] == "adjustment"


def test_next_period_after_the_last_period_becomes_an_adjustment(runtime: Runtime) -> None:
    tenant = setup(runtime, meters=TOKENS)
    subscription = subscribe(runtime, tenant, START)
    runtime.billing.cancel_subscription(tenant, "sub_" + subscription.id.hex, START + DAY)
    send(runtime, tenant, START + DAY, START + 8 * DAY, "on-time", value=D(2))
    bill(runtime, START + WEEK + HOUR)
    send(runtime, tenant, START + 2 * DAY, START + 9 * DAY, "late", value=D(5))
    bill(runtime, START + 9 * DAY)
    regular, adjustment = invoices(runtime, tenant)
    assert adjustment["corrects"] == regular["id"] and adjustment["total"] == "5.00"
    assert late_rows(runtime, tenant)[0].policy == "current_period"
