"""Billing runs over a real store: periods in the customer's zone to the microsecond, base
fees, plan versions, idempotent reruns, the upcoming invoice and rebuilt read models."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from domain.errors import Conflict
from projections.compare import diff, dump
from projections.invoices import BILLING_TABLES, InvoiceProjection
from projections.runner import Runner
from projections.tables import tracking
from tests.integration.billing_helpers import (
    DAY,
    HOUR,
    US,
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
KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")


def test_kolkata_weekly_boundary_to_the_microsecond(runtime: Runtime) -> None:
    """A Monday-to-Monday week in Asia/Kolkata: an event one microsecond before the
    boundary is billed in the first week, one exactly at it in the second."""
    tenant = setup(runtime, timezone="Asia/Kolkata")
    monday = datetime(2026, 3, 2, tzinfo=KOLKATA)  # 2026-03-01T18:30:00Z
    boundary = datetime(2026, 3, 9, tzinfo=KOLKATA)
    now = boundary + 2 * DAY
    # usage stored before the subscription exists is billed from start_at on
    before = send(runtime, tenant, boundary - US, now, "before")
    subscribe(runtime, tenant, monday)
    at = send(runtime, tenant, boundary, now, "at")
    inside = send(runtime, tenant, monday + HOUR, now, "inside")
    send(runtime, tenant, monday - US, now, "before-start")  # not in any period

    assert bill(runtime, boundary + HOUR - US).invoices == []  # still in the grace window
    bill(runtime, boundary + HOUR)
    [first] = invoices(runtime, tenant)
    assert first["period_start"] == "2026-03-01T18:30:00Z"
    assert first["period_end"] == "2026-03-08T18:30:00Z"
    calls = line(first, "calls")
    assert calls["quantity"] == "2" and calls["amount"] == "2.00"
    traced = trace(runtime, first, calls)
    assert [(e, t) for e, t, _ in traced] == [
        (before.hex, boundary - US),
        (inside.hex, monday + HOUR),
    ]

    bill(runtime, boundary + WEEK + HOUR)
    second = invoices(runtime, tenant)[1]
    assert second["period_start"] == "2026-03-08T18:30:00Z"
    assert [e for e, _, _ in trace(runtime, second, line(second, "calls"))] == [at.hex]


def test_a_month_across_the_dst_change_in_new_york(runtime: Runtime) -> None:
    tenant = setup(runtime, timezone="America/New_York", interval="month")
    start = datetime(2026, 3, 1, tzinfo=NEW_YORK)  # EST, 05:00Z
    end = datetime(2026, 4, 1, tzinfo=NEW_YORK)  # EDT, 04:00Z
    now = end + DAY
    subscribe(runtime, tenant, start)
    send(runtime, tenant, datetime(2026, 3, 8, 1, 59, 59, 999999, tzinfo=NEW_YORK), now, "pre-gap")
    send(runtime, tenant, datetime(2026, 3, 8, 3, 0, tzinfo=NEW_YORK), now, "post-gap")
    send(runtime, tenant, end - US, now, "last")
    send(runtime, tenant, end, now, "next")
    bill(runtime, end + HOUR)
    [invoice] = invoices(runtime, tenant)
    assert (invoice["period_start"], invoice["period_end"]) == (
        "2026-03-01T05:00:00Z",
        "2026-04-01T04:00:00Z",
    )
    assert line(invoice, "calls")["quantity"] == "3"


def test_running_twice_or_concurrently_issues_each_invoice_once(runtime: Runtime) -> None:
    tenant = setup(runtime, base_fee={"amount": "5", "timing": "in_advance"})
    start = datetime(2026, 3, 2, tzinfo=UTC)
    for number in range(1, 4):
        customer = f"c{number}"
        if number > 1:
            runtime.catalog.create_customer(tenant, {"external_id": customer})
        subscribe(runtime, tenant, start, customer=customer)
        send(runtime, tenant, start + DAY, start + 20 * DAY, f"e{number}", customer=customer)
    as_of = start + 3 * WEEK + HOUR
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(bill(runtime, as_of))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    issued = sorted(i for r in results for i in r.invoices)
    assert len(issued) == len(set(issued)) == 3 * (1 + 3)  # opening + 3 weeks each
    assert bill(runtime, as_of).invoices == []
    for number in range(1, 4):
        found = invoices(runtime, tenant, f"c{number}")
        assert [i["kind"] for i in found] == ["opening", "regular", "regular", "regular"]
        assert len({(i["kind"], i["period_start"]) for i in found}) == 4


def test_base_fee_timing_minimum_and_credits_through_real_invoices(runtime: Runtime) -> None:
    tenant = setup(
        runtime,
        base_fee={"amount": "10", "timing": "in_advance"},
        minimum_amount="15",
        included_credits="2",
        prices=[{"meter": "calls", "model": "per_unit", "unit_price": "0.75"}],
    )
    start = datetime(2026, 3, 2, tzinfo=UTC)
    subscribe(runtime, tenant, start)
    for i in range(4):  # 3.00 of usage in week one
        send(runtime, tenant, start + i * HOUR, start + 9 * DAY, f"w1-{i}")
    bill(runtime, start)  # the opening invoice, at the start of the first period
    [opening] = invoices(runtime, tenant)
    assert opening["kind"] == "opening" and opening["total"] == "10.00"
    assert opening["lines"][0]["period_start"] == "2026-03-02T00:00:00Z"

    bill(runtime, start + WEEK + HOUR)
    week = invoices(runtime, tenant)[1]
    kinds = [(x["type"], x["amount"], x["period_start"][:10]) for x in week["lines"]]
    # usage 3.00 - credits 2.00 + prepaid fee 10.00 = 11.00 -> true-up 4.00
    assert kinds == [
        ("usage", "3.00", "2026-03-02"),
        ("base_fee", "10.00", "2026-03-09"),  # the next week, in advance
        ("minimum_true_up", "4.00", "2026-03-02"),
    ]
    assert (week["subtotal"], week["credits_applied"], week["total"]) == (
        "17.00",
        "2.00",
        "15.00",
    )


def test_in_arrears_fee_is_billed_with_the_period_it_covers(runtime: Runtime) -> None:
    tenant = setup(runtime, base_fee={"amount": "7.5", "timing": "in_arrears"})
    start = datetime(2026, 3, 2, tzinfo=UTC)
    subscribe(runtime, tenant, start)
    bill(runtime, start + WEEK + HOUR)
    [invoice] = invoices(runtime, tenant)
    fee = next(x for x in invoice["lines"] if x["type"] == "base_fee")
    assert (fee["amount"], fee["period_start"]) == ("7.50", "2026-03-02T00:00:00Z")


def test_a_plan_revision_is_a_new_version_named_by_later_invoices(runtime: Runtime) -> None:
    tenant = setup(runtime)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    subscribe(runtime, tenant, start)
    send(runtime, tenant, start + DAY, start + 9 * DAY, "one")
    bill(runtime, start + WEEK + HOUR)
    plan = runtime.billing.revise_plan(
        tenant, "p", {"prices": [{"meter": "calls", "model": "per_unit", "unit_price": "3"}]}
    )
    assert plan.latest == 2
    send(runtime, tenant, start + WEEK + DAY, start + 9 * DAY, "two")
    bill(runtime, start + 2 * WEEK + HOUR)
    first, second = invoices(runtime, tenant)
    assert (first["plan_version"], line(first, "calls")["amount"]) == (1, "1.00")
    assert (second["plan_version"], line(second, "calls")["amount"]) == (2, "3.00")


def test_the_upcoming_invoice_is_what_the_close_issues(runtime: Runtime) -> None:
    tenant = setup(
        runtime,
        meters=[
            {"key": "calls", "event_type": "api", "aggregation": "COUNT"},
            {"key": "gb", "event_type": "disk", "aggregation": "WEIGHTED_SUM"},
        ],
        minimum_amount="20",
        prices=[
            {
                "meter": "calls",
                "model": "volume",
                "tiers": [{"up_to": 2, "unit_price": "1"}, {"unit_price": "0.5", "flat_fee": "1"}],
            },
            {"meter": "gb", "model": "per_unit", "unit_price": "0.1"},
        ],
    )
    start = datetime(2026, 3, 2, tzinfo=UTC)
    subscribe(runtime, tenant, start)
    now = start + WEEK - HOUR
    for i in range(5):
        send(runtime, tenant, start + i * DAY, now, f"c{i}")
    send(runtime, tenant, start - DAY, now, "level", event_type="disk", value=D(10))
    send(runtime, tenant, start + 3.5 * DAY, now, "more", event_type="disk", value=D(7))
    runtime.sync_read_models(runtime.ledger.recorder.max_notification_id() or 0)
    with runtime.read_engine.connect() as conn:
        found = upcoming_draft(conn, tenant.hex, "c1", now, "next_period")
    assert found is not None
    draft = found[3]
    bill(runtime, start + WEEK + HOUR)
    [issued] = invoices(runtime, tenant)
    assert [(x["type"], x["quantity"], x["amount"]) for x in issued["lines"]] == [
        (x.kind, format(x.quantity.normalize(), "f"), format(x.rounded, "f")) for x in draft.lines
    ]
    assert line(issued, "gb")["quantity"] == "13.5"  # 10 all week, 7 for half of it
    assert issued["total"] == format(draft.total, "f") == "20.00"


def test_cancelling_usage_works_while_open_and_is_refused_once_closed(runtime: Runtime) -> None:
    tenant = setup(runtime)
    start = datetime.now(UTC).replace(microsecond=0) - 10 * DAY
    subscribe(runtime, tenant, start)
    old = send(runtime, tenant, start + HOUR, start + 10 * DAY, "old")
    bill(runtime, start + WEEK + HOUR)
    recent = send(runtime, tenant, start + 8 * DAY, start + 10 * DAY, "recent")
    with pytest.raises(Conflict):
        runtime.billing.check_usage_cancellable(tenant, "c1", start + HOUR, start + 10 * DAY)
    runtime.billing.check_usage_cancellable(tenant, "c1", start + 8 * DAY, start + 10 * DAY)
    event = runtime.ledger.repository.get(recent)
    event.cancel(reason="duplicate")
    runtime.ledger.save(event)
    runtime.sync_read_models(runtime.ledger.recorder.max_notification_id() or 0)
    with runtime.read_engine.connect() as conn:
        found = upcoming_draft(conn, tenant.hex, "c1", start + 10 * DAY, "next_period")
    assert found is not None and found[3].lines[0].quantity == 0
    assert old is not None


def test_one_live_subscription_per_customer(runtime: Runtime) -> None:
    tenant = setup(runtime)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    subscription = subscribe(runtime, tenant, start)
    with pytest.raises(Conflict):
        subscribe(runtime, tenant, start + DAY)
    cancelled = runtime.billing.cancel_subscription(
        tenant, "sub_" + subscription.id.hex, start + DAY
    )
    assert cancelled.state.ends_us is not None
    again = subscribe(runtime, tenant, start + WEEK)
    assert again.id != subscription.id
    bill(runtime, start + 3 * WEEK + HOUR)
    periods = [(i["subscription"], i["period_start"][:10]) for i in invoices(runtime, tenant)]
    assert periods == [
        ("sub_" + subscription.id.hex, "2026-03-02"),
        ("sub_" + again.id.hex, "2026-03-09"),
        ("sub_" + again.id.hex, "2026-03-16"),
    ]


def test_the_billing_read_models_rebuild_row_for_row(runtime: Runtime) -> None:
    tenant = setup(runtime, base_fee={"amount": "3", "timing": "in_advance"})
    start = datetime(2026, 3, 2, tzinfo=UTC)
    subscribe(runtime, tenant, start)
    for i in range(20):
        send(runtime, tenant, start + i * HOUR, start + 20 * DAY, f"e{i}")
    bill(runtime, start + WEEK + HOUR)
    send(runtime, tenant, start + DAY, start + 20 * DAY, "late")
    runtime.billing.set_late_event_policy(tenant, "current_period")
    bill(runtime, start + 2 * WEEK + HOUR)
    with runtime.engine.connect() as conn:
        live = dump(conn, BILLING_TABLES)
    assert len(live["invoices"]) == 4  # opening, two weeks, one adjustment
    with runtime.engine.begin() as conn:
        for table in reversed(BILLING_TABLES):
            conn.execute(table.delete())
        conn.execute(tracking.delete().where(tracking.c.name == "invoices"))
    Runner(runtime.ledger.recorder, runtime.engine, InvoiceProjection(), batch_size=7).catch_up()
    with runtime.engine.connect() as conn:
        assert diff(live, dump(conn, BILLING_TABLES)) == []


def test_one_failing_subscription_does_not_stop_the_others(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.billing

    tenant = setup(runtime)
    runtime.catalog.create_customer(tenant, {"external_id": "c2"})
    start = datetime(2026, 3, 2, tzinfo=UTC)
    subscribe(runtime, tenant, start)
    broken = subscribe(runtime, tenant, start, customer="c2")
    real = workers.billing.draft_regular

    def draft(conn, state, *args, **kwargs):  # type: ignore[no-untyped-def]
        if state.customer == "c2":
            raise RuntimeError("a bug")
        return real(conn, state, *args, **kwargs)

    monkeypatch.setattr(workers.billing, "draft_regular", draft)
    result = bill(runtime, start + WEEK + HOUR)
    assert result.failed == [broken.id.hex]
    assert len(invoices(runtime, tenant)) == 1
    monkeypatch.setattr(workers.billing, "draft_regular", real)
    assert len(bill(runtime, start + WEEK + HOUR).invoices) == 1  # retried next run
