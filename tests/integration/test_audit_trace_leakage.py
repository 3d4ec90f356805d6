"""`xtopay audit trace` and `xtopay audit leakage` over real stores (SQLite and
PostgreSQL): every accepted usage event is in exactly one bucket, tampering with the read
models is caught and named, and the CLI prints and exits as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from api.billing_views import trace_events
from projections.invoices import invoice_lines
from projections.wallets import wallets
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
)
from workers.audit import BUCKETS, LeakageReport, leakage, trace, wallet_ledger
from workers.runtime import Runtime

D = Decimal
REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday; weekly periods
METERS = [
    {"key": "calls", "event_type": "api", "aggregation": "SUM"},
    {"key": "gb", "event_type": "disk", "aggregation": "WEIGHTED_SUM"},
]
PRICES = [
    {"meter": "calls", "model": "per_unit", "unit_price": "1"},
    {"meter": "gb", "model": "per_unit", "unit_price": "0.1"},
]
# what the scenario leaves in each bucket (cancelled and unmetered count events,
# the others (event, meter) facts)
EXPECTED = {
    "invoiced": 5,  # a, level (gb), late1 (next period's line), b, late2 (adjustment)
    "open_period": 2,  # late4 (next_period, awaiting the next close), c
    "late_pending": 1,  # late5: arrived after its period closed, no billing step since
    "late_no_change": 0,
    "ignored": 1,  # late3
    "cancelled": 1,  # x
    "unpriced": 0,
    "no_subscription": 1,  # n1, of customer c2
    "unmetered": 1,  # other
}


@dataclass
class Scenario:
    tenant: UUID
    events: dict[str, UUID]
    invoices: list[dict[str, Any]]  # c1's, oldest first: week 1, adjustment of week 1, week 2


def scenario(rt: Runtime) -> Scenario:
    """Two closed weeks, an open third, a cancelled event and each late policy."""
    tenant = setup(rt, meters=METERS, prices=PRICES)
    rt.catalog.create_customer(tenant, {"external_id": "c2", "timezone": "UTC"})
    subscribe(rt, tenant, START)
    wallet = rt.wallets.open(tenant, {"customer": "c1", "currency": "USD"})
    rt.wallets.top_up(tenant, wallet.id, {"amount": "100", "idempotency_key": "t1"})
    rt.wallets.grant(tenant, wallet.id, {"amount": "2"}, None)
    e: dict[str, UUID] = {}
    day1 = START + DAY
    e["a"] = send(rt, tenant, day1, day1, "a", value=D(2))
    e["level"] = send(rt, tenant, day1, day1, "level", event_type="disk", value=D(10))
    e["other"] = send(rt, tenant, day1, day1, "other", event_type="misc", value=D(1))
    e["n1"] = send(rt, tenant, day1, day1, "n1", customer="c2", value=D(4))
    bill(rt, START + WEEK + HOUR)  # week 1 closed
    e["late1"] = send(rt, tenant, START + 2 * DAY, START + 8 * DAY, "late1", value=D(5))
    bill(rt, START + 9 * DAY)  # late1: next_period
    e["b"] = send(rt, tenant, START + 8 * DAY, START + 9 * DAY, "b", value=D(1))
    e["x"] = send(rt, tenant, START + 9 * DAY, START + 9 * DAY, "x", value=D(7))
    event = rt.ledger.repository.get(e["x"])
    event.cancel(reason="duplicate")
    rt.ledger.save(event)
    bill(rt, START + 2 * WEEK + HOUR)  # week 2 closed: b and late1
    rt.billing.set_late_event_policy(tenant, "current_period")
    e["late2"] = send(rt, tenant, START + 3 * DAY, START + 15 * DAY, "late2", value=D(3))
    bill(rt, START + 15 * DAY)  # an adjustment of week 1
    rt.billing.set_late_event_policy(tenant, "ignore")
    e["late3"] = send(rt, tenant, START + 10 * DAY, START + 15 * DAY, "late3", value=D(9))
    bill(rt, START + 16 * DAY)
    rt.billing.set_late_event_policy(tenant, "next_period")
    e["late4"] = send(rt, tenant, START + 11 * DAY, START + 16 * DAY, "late4", value=D(6))
    bill(rt, START + 16 * DAY + HOUR)  # late4 waits for week 3's invoice
    e["c"] = send(rt, tenant, START + 17 * DAY, START + 17 * DAY, "c", value=D(1))
    e["late5"] = send(rt, tenant, START + 12 * DAY, START + 17 * DAY, "late5", value=D(8))
    rt.sync_read_models(rt.ledger.recorder.max_notification_id() or 0)
    rt.wallet_book.catch_up()
    found = invoices(rt, tenant)
    assert [(i["kind"], i["period_start"][:10]) for i in found] == [
        ("regular", "2026-03-02"),
        ("regular", "2026-03-09"),
        ("adjustment", "2026-03-02"),
    ]
    week1, week2, adjustment = found
    return Scenario(tenant, e, [week1, adjustment, week2])


def _leaks(report: LeakageReport) -> dict[str, str]:
    return {leak.event_id: leak.why for leak in report.leaks}


def _consistent_counts(report: LeakageReport) -> None:
    per_fact = sum(n for k, n in report.buckets.items() if k not in ("cancelled", "unmetered"))
    assert per_fact + report.leaked == report.facts


# leakage in-process


def test_every_event_is_in_exactly_one_bucket(runtime: Runtime) -> None:
    s = scenario(runtime)
    report = leakage(runtime)
    assert report.leaks == [] and report.leaked == 0, report.leaks
    assert report.buckets == EXPECTED
    assert (report.events, report.facts) == (12, 10)
    assert report.wallets == 1 and report.wallet_problems == []
    assert report.ok
    _consistent_counts(report)
    # the late-decided events are where the policies put them
    week2 = s.invoices[2]
    assert line(week2, "calls")["quantity"] == "6"  # b + late1


def test_a_time_window_counts_only_events_in_it(runtime: Runtime) -> None:
    scenario(runtime)
    week2 = leakage(runtime, START + WEEK, START + 2 * WEEK)
    assert week2.ok, week2.leaks
    assert week2.events == 5  # b, x, late3, late4, late5
    assert {k: n for k, n in week2.buckets.items() if n} == {
        "invoiced": 1,
        "open_period": 1,
        "late_pending": 1,
        "ignored": 1,
        "cancelled": 1,
    }
    assert leakage(runtime, START + 30 * DAY).events == 0


def test_a_deleted_invoice_line_is_leakage_naming_the_event(runtime: Runtime) -> None:
    s = scenario(runtime)
    week1 = s.invoices[0]
    with runtime.engine.begin() as conn:
        calls = line(week1, "calls")["id"][3:]
        deleted = conn.execute(sa.delete(invoice_lines).where(invoice_lines.c.line_id == calls))
        assert deleted.rowcount == 1
    report = leakage(runtime)
    assert not report.ok and report.leaked == 1
    [leak] = report.leaks
    assert (leak.event_id, leak.meter, leak.customer) == (s.events["a"].hex, "calls", "c1")
    assert leak.timestamp == "2026-03-03T00:00:00Z"
    assert "in none of its lines" in leak.why and week1["id"] in leak.why
    # the adjustment still bills late2 on top of the (stored) original
    assert report.buckets["invoiced"] == EXPECTED["invoiced"] - 1
    _consistent_counts(report)


def test_a_level_missing_from_one_period_is_leakage(runtime: Runtime) -> None:
    """A WEIGHTED_SUM level counts in every period after it: still billed in week 2 is
    not enough when week 1's line is gone."""
    s = scenario(runtime)
    week1 = s.invoices[0]
    with runtime.engine.begin() as conn:
        conn.execute(
            sa.delete(invoice_lines).where(invoice_lines.c.line_id == line(week1, "gb")["id"][3:])
        )
    report = leakage(runtime)
    assert report.leaked == 1
    [leak] = report.leaks
    assert (leak.event_id, leak.meter) == (s.events["level"].hex, "gb")
    assert "counts every level before its end" in leak.why and week1["id"] in leak.why


def test_a_duplicated_line_trace_is_double_counting(runtime: Runtime) -> None:
    s = scenario(runtime)
    week2 = s.invoices[2]
    with runtime.engine.begin() as conn:
        row = conn.execute(
            sa.select(invoice_lines).where(
                invoice_lines.c.line_id == line(week2, "calls")["id"][3:]
            )
        ).one()
        copy = {**row._asdict(), "line_id": uuid.uuid4().hex, "number": 99}
        conn.execute(sa.insert(invoice_lines).values(copy))
    report = leakage(runtime)
    assert report.leaked == 2
    assert set(_leaks(report)) == {s.events["b"].hex, s.events["late1"].hex}
    assert all("more than one invoice line" in why for why in _leaks(report).values())
    assert week2["id"] in report.leaks[0].why


def test_late_usage_that_changes_nothing_needs_no_adjustment(runtime: Runtime) -> None:
    tenant = setup(runtime, meters=[{"key": "calls", "event_type": "api", "aggregation": "MAX"}])
    subscribe(runtime, tenant, START)
    send(runtime, tenant, START + DAY, START + 8 * DAY, "a", value=D(3))
    bill(runtime, START + WEEK + HOUR)
    runtime.billing.set_late_event_policy(tenant, "current_period")
    below = send(runtime, tenant, START + 2 * DAY, START + 9 * DAY, "below", value=D(2))
    bill(runtime, START + 9 * DAY)
    assert len(invoices(runtime, tenant)) == 1  # nothing to adjust
    report = leakage(runtime)
    assert report.ok, report.leaks
    assert (report.buckets["late_no_change"], report.buckets["invoiced"]) == (1, 1)
    peak = send(runtime, tenant, START + 3 * DAY, START + 10 * DAY, "peak", value=D(8))
    bill(runtime, START + 10 * DAY)
    report = leakage(runtime)
    assert report.ok, report.leaks
    assert (report.buckets["late_no_change"], report.buckets["invoiced"]) == (1, 2)
    assert below != peak


def test_unpriced_meters_are_their_own_bucket(runtime: Runtime) -> None:
    tenant = setup(runtime, meters=METERS, prices=PRICES[:1])  # gb is metered, not priced
    subscribe(runtime, tenant, START)
    send(runtime, tenant, START + DAY, START + DAY, "g1", event_type="disk", value=D(1))
    bill(runtime, START + WEEK + HOUR)
    send(runtime, tenant, START + 8 * DAY, START + 8 * DAY, "g2", event_type="disk", value=D(1))
    runtime.sync_read_models(runtime.ledger.recorder.max_notification_id() or 0)
    report = leakage(runtime)
    assert report.ok, report.leaks
    assert report.buckets["unpriced"] == 2


def test_wallet_ledger_problems_are_caught(runtime: Runtime) -> None:
    scenario(runtime)
    assert wallet_ledger(runtime) == []
    with runtime.engine.begin() as conn:
        balance = conn.execute(sa.select(wallets.c.balance)).scalar_one()
        conn.execute(sa.update(wallets).values(balance=balance + 1))
    [problem] = wallet_ledger(runtime)
    assert "read model shows" in problem and "(c1, USD)" in problem
    report = leakage(runtime)
    assert report.leaked == 0 and report.wallet_problems == [problem] and not report.ok


# trace in-process


def test_trace_lists_every_line_with_contributions_adding_up(runtime: Runtime) -> None:
    s = scenario(runtime)
    week1, adjustment, week2 = s.invoices
    found = trace(runtime, week2["id"], trace_events)
    assert found["consistent"] and found["id"] == week2["id"]
    assert [x["id"] for x in found["lines"]] == [x["id"] for x in week2["lines"]]
    calls = next(x for x in found["lines"] if x["meter"] == "calls")
    assert [(e["idempotency_key"], e["value"]) for e in calls["events"]] == [
        ("late1", "5"),
        ("b", "1"),
    ]
    assert calls["events"][0]["timestamp"] == "2026-03-04T00:00:00Z"  # its own time
    assert calls["events_total"] == calls["quantity"] == "6"
    gb = next(x for x in found["lines"] if x["meter"] == "gb")
    assert D(gb["events_total"]) == D(gb["quantity"]) == 10  # the level held all week
    correction = trace(runtime, adjustment["id"][4:], trace_events)
    [delta] = [x for x in correction["lines"] if x["type"] == "usage_adjustment"]
    assert [(e["id"], e["value"]) for e in delta["events"]] == [
        ("evt_" + s.events["late2"].hex, "3")
    ]
    assert trace(runtime, week1["id"], trace_events)["consistent"]


def test_trace_of_an_unknown_invoice_is_a_lookup_error(runtime: Runtime) -> None:
    import pytest

    with pytest.raises(LookupError):
        trace(runtime, "inv_" + uuid.uuid4().hex, trace_events)
    with pytest.raises(LookupError):
        trace(runtime, "not-an-id", trace_events)


# the command line


def cli(rt: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XTOPAY_DATABASE_URL": rt.settings.database_url}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def counts(stdout: str) -> dict[str, int]:
    names = (*BUCKETS, "leaked")
    return {
        name: int(value)
        for name, _, value in (x.partition(": ") for x in stdout.splitlines())
        if name in names
    }


def test_cli_leakage_prints_the_buckets_and_exits_by_the_result(runtime: Runtime) -> None:
    s = scenario(runtime)
    done = cli(runtime, "leakage")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("leakage: 12 accepted usage events, 10 meter facts")
    assert lines[1 : len(BUCKETS) + 2] == [f"{k}: {n}" for k, n in EXPECTED.items()] + ["leaked: 0"]
    assert lines[-1].startswith("wallets: 1 checked, the ledger identity holds")
    assert "\x1b[" not in done.stdout + done.stderr  # no progress bar in a pipe

    window = cli(runtime, "leakage", "--from", "2026-03-09T00:00:00Z", "--to", "2026-03-16")
    assert window.returncode == 2 and "RFC 3339" in window.stderr  # no offset: refused
    window = cli(
        runtime, "leakage", "--from", "2026-03-09T00:00:00Z", "--to", "2026-03-16T00:00:00+00:00"
    )
    assert window.returncode == 0, window.stdout + window.stderr
    assert counts(window.stdout)["invoiced"] == 1 and counts(window.stdout)["cancelled"] == 1

    with runtime.engine.begin() as conn:
        conn.execute(
            sa.delete(invoice_lines).where(
                invoice_lines.c.line_id == line(s.invoices[0], "calls")["id"][3:]
            )
        )
    failed = cli(runtime, "leakage")
    assert failed.returncode == 1
    assert counts(failed.stdout)["leaked"] == 1
    assert f"  evt_{s.events['a'].hex} meter calls customer c1" in failed.stdout


def test_cli_trace_prints_a_table_or_json(runtime: Runtime) -> None:
    s = scenario(runtime)
    week2 = s.invoices[2]
    done = cli(runtime, "trace", week2["id"], "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["id"] == week2["id"] and found["consistent"]
    for x in found["lines"]:
        if x["events_total"] is not None:
            assert sum(D(e["value"]) for e in x["events"]) == D(x["quantity"])

    text = cli(runtime, "trace", week2["id"])
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"invoice {week2['id']} regular finalized")
    for key in ("late1", "b"):
        assert f"evt_{s.events[key].hex}" in text.stdout
    assert "events: 2, contributions 6 = quantity 6" in text.stdout
    assert text.stdout.rstrip().endswith("every line's contributions add up to its quantity")

    missing = cli(runtime, "trace", "inv_" + uuid.uuid4().hex)
    assert missing.returncode == 1 and "no invoice" in missing.stderr
