"""Meter usage over real HTTP: every aggregation, filters, group_by, windows and time zones,
range edges, running totals and the customer's current period."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.support import (
    Server,
    create_meter,
    days_ago_midnight,
    eventually,
    hours_ago,
    iso,
    ok,
    send,
    uid,
    usage_rows,
    usage_value,
    wait_rows,
    wait_value,
)

DECIMAL = re.compile(r"-?\d+(\.\d+)?")
AGGREGATIONS = ("COUNT", "SUM", "MAX", "MIN", "LAST", "AVG", "UNIQUE_COUNT", "WEIGHTED_SUM")


def span(start: datetime, end: datetime, customer: str, **extra: Any) -> dict[str, Any]:
    return {"customer": customer, "from": iso(start), "to": iso(end), **extra}


def windows_of(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["window_start"], r["window_end"], r["value"]) for r in rows]


def batch(server: Server, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = ok(server.client.post("/v1/usage-events/batch", json={"events": events}))
    assert body["rejected"] == 0, body
    return body


def meters_of_every_aggregation(server: Server, event_type: str) -> dict[str, str]:
    keys = {}
    for aggregation in AGGREGATIONS:
        key = uid(aggregation.lower())
        spec: dict[str, Any] = {"key": key, "event_type": event_type, "aggregation": aggregation}
        if aggregation == "UNIQUE_COUNT":
            spec["unique_property"] = "user_id"
        elif aggregation != "COUNT":
            spec["value_property"] = "amount"
        meter = create_meter(server.client, **spec)
        assert meter["key"] == key
        assert meter["aggregation"] == aggregation
        keys[aggregation] = key
    return keys


def test_every_aggregation_over_a_range_and_per_hour(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    meters = meters_of_every_aggregation(server, event_type)
    r = hours_ago(30)
    events = [  # (minutes after r, amount, user): the latest event is sent first
        (90, 3, "u1"),
        (0, 1, "u1"),
        (10, "2.5", "u2"),  # a numeric property as a decimal string
        (20, 4, "u3"),
        (30, 2, "u2"),
    ]
    for minutes, amount, user in events:
        send(
            c,
            event_type=event_type,
            customer=customer,
            timestamp=iso(r + timedelta(minutes=minutes)),
            properties={"amount": amount, "user_id": user},
        )
    whole = span(r, r + timedelta(hours=2), customer)
    assert wait_value(c, meters["COUNT"], "5", whole) == "5"
    expected = {
        "COUNT": "5",
        "SUM": "12.5",
        "MAX": "4",
        "MIN": "1",
        "LAST": "3",  # the value with the latest timestamp, though it arrived first
        "AVG": "2.5",
        "UNIQUE_COUNT": "3",
        # level 1 from :00, +2.5 at :10, +4 at :20, +2 at :30, +3 at 1:30, over 120 min:
        # (1*120 + 2.5*110 + 4*100 + 2*90 + 3*30) / 120 = 1065 / 120
        "WEIGHTED_SUM": "8.875",
    }
    assert {a: usage_value(c, meters[a], whole) for a in AGGREGATIONS} == expected

    # a range whose ends are not on 15-minute boundaries gives the same numbers, except
    # WEIGHTED_SUM, averaged over 140 minutes: (1*130 + 2.5*120 + 4*110 + 2*100 + 3*40) / 140
    ragged = span(r - timedelta(minutes=10), r + timedelta(minutes=130), customer)
    assert {a: usage_value(c, meters[a], ragged) for a in AGGREGATIONS} == {
        **expected,
        "WEIGHTED_SUM": "8.5",
    }

    hourly = {
        a: windows_of(usage_rows(c, meters[a], {**whole, "window_size": "HOUR"}))
        for a in AGGREGATIONS
    }
    first = (iso(r), iso(r + timedelta(hours=1)))
    second = (iso(r + timedelta(hours=1)), iso(r + timedelta(hours=2)))
    per_hour = {
        "COUNT": ("4", "1"),
        "SUM": ("9.5", "3"),
        "MAX": ("4", "3"),
        "MIN": ("1", "3"),
        "LAST": ("2", "3"),
        "AVG": ("2.375", "3"),
        "UNIQUE_COUNT": ("3", "1"),
    }
    weighted = hourly.pop("WEIGHTED_SUM")
    assert hourly == {a: [(*first, v1), (*second, v2)] for a, (v1, v2) in per_hour.items()}
    # (1*60 + 2.5*50 + 4*40 + 2*30) / 60, then (9.5*60 + 3*30) / 60: the level carries a
    # decimal place (2.5), so the second may be written "11" or "11.0"
    assert [w[:2] for w in weighted] == [first, second]
    assert weighted[0][2] == "6.75"
    assert DECIMAL.fullmatch(weighted[1][2]) and Decimal(weighted[1][2]) == 11


def test_events_without_a_usable_value_are_left_out(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    meters = meters_of_every_aggregation(server, event_type)
    r = hours_ago(29)
    amounts: list[Any] = [6, "n/a", None, True, "1.5"]
    for i, amount in enumerate(amounts):
        props: dict[str, Any] = {"user_id": f"u{i}"}
        if amount is not None:
            props["amount"] = amount
        send(
            c,
            event_type=event_type,
            customer=customer,
            timestamp=iso(r + timedelta(minutes=i)),
            properties=props,
        )
    whole = span(r, r + timedelta(hours=1), customer)
    assert wait_value(c, meters["COUNT"], "5", whole) == "5"
    values = {a: usage_value(c, meters[a], whole) for a in AGGREGATIONS if a != "WEIGHTED_SUM"}
    assert values == {
        "COUNT": "5",
        "SUM": "7.5",
        "MAX": "6",
        "MIN": "1.5",
        "LAST": "1.5",
        "AVG": "3.75",
        "UNIQUE_COUNT": "5",
    }


def test_weighted_sum_integrates_the_level_over_the_range(server: Server) -> None:
    c, event_type, customer = server.client, uid("storage"), uid("cus")
    meter = uid("gb")
    create_meter(c, key=meter, event_type=event_type, aggregation="WEIGHTED_SUM")
    r = hours_ago(40)
    send(c, event_type=event_type, customer=customer, value=10, timestamp=iso(r))
    send(
        c,
        event_type=event_type,
        customer=customer,
        value=10,
        timestamp=iso(r + timedelta(hours=1)),
    )
    two_hours = span(r, r + timedelta(hours=2), customer)
    assert wait_value(c, meter, "15", two_hours) == "15"  # 10 for an hour, 20 for an hour
    # the level reached before the range counts from its start
    hour = timedelta(hours=1)
    assert usage_value(c, meter, span(r + hour, r + 2 * hour, customer)) == "20"
    assert usage_value(c, meter, span(r + 3 * hour, r + 4 * hour, customer)) == "20"
    hourly = usage_rows(c, meter, {**two_hours, "window_size": "HOUR"})
    assert [row["value"] for row in hourly] == ["10", "20"]

    # a negative value lowers the level: 10 for 30 minutes, then 6
    other = uid("cus")
    send(c, event_type=event_type, customer=other, value=10, timestamp=iso(r))
    send(
        c,
        event_type=event_type,
        customer=other,
        value=-4,
        timestamp=iso(r + timedelta(minutes=30)),
    )
    assert wait_value(c, meter, "8", span(r, r + timedelta(hours=1), other)) == "8"


def test_every_filter_operator(server: Server) -> None:
    c, event_type, customer = server.client, uid("requests"), uid("cus")
    filters: dict[str, dict[str, Any]] = {
        "eq": {"property": "tier", "operator": "eq", "value": "gold"},
        "neq": {"property": "tier", "operator": "neq", "value": "gold"},
        "in": {"property": "tier", "operator": "in", "value": ["gold", "silver"]},
        "nin": {"property": "tier", "operator": "nin", "value": ["gold", "silver"]},
        "gt": {"property": "n", "operator": "gt", "value": 5},
        "gte": {"property": "n", "operator": "gte", "value": 5},
        "lt": {"property": "n", "operator": "lt", "value": 5},
        "lte": {"property": "n", "operator": "lte", "value": "5"},
        "exists": {"property": "tier", "operator": "exists"},
        "eq_bool": {"property": "beta", "operator": "eq", "value": True},
    }
    meters = {}
    for name, condition in filters.items():
        meters[name] = uid(f"f_{name}")
        create_meter(
            c, key=meters[name], event_type=event_type, aggregation="COUNT", filters=[condition]
        )
    r = hours_ago(28)
    stream = [
        {"tier": "gold", "n": 1, "beta": True},
        {"tier": "silver", "n": 5},
        {"tier": "bronze", "n": 10, "beta": False},
        {"n": "7.5"},  # no tier; n as a decimal string
        {"tier": "gold"},  # no n
    ]
    batch(
        server,
        [
            {
                "event_type": event_type,
                "customer": customer,
                "timestamp": iso(r + timedelta(minutes=i)),
                "properties": props,
            }
            for i, props in enumerate(stream)
        ],
    )
    whole = span(r, r + timedelta(hours=1), customer)
    expected = {
        "eq": "2",  # gold, gold
        "neq": "3",  # silver, bronze, no tier
        "in": "3",  # gold, silver, gold
        "nin": "2",  # bronze, no tier
        "gt": "2",  # 10, 7.5
        "gte": "3",  # 5, 10, 7.5
        "lt": "1",  # 1
        "lte": "2",  # 1, 5
        "exists": "4",
        "eq_bool": "1",
    }
    seen = {name: wait_value(c, meters[name], value, whole) for name, value in expected.items()}
    assert seen == expected

    # meter_id feeds that one meter only
    direct = send(
        c,
        meter_id=meters["eq"],
        customer=customer,
        timestamp=iso(r + timedelta(minutes=30)),
        properties={"tier": "gold", "n": 1},
    )
    assert direct["meter_id"] == meters["eq"]
    assert wait_value(c, meters["eq"], "3", whole) == "3"
    assert {name: usage_value(c, meters[name], whole) for name in expected} == {
        **expected,
        "eq": "3",
    }


def test_group_by_one_or_more_properties(server: Server) -> None:
    c, event_type, customer = server.client, uid("tokens"), uid("cus")
    meter = uid("tok")
    create_meter(
        c, key=meter, event_type=event_type, aggregation="SUM", group_by=["model", "region"]
    )
    r = hours_ago(27)
    stream = [
        ({"model": "a", "region": "eu"}, 1),
        ({"model": "a", "region": "us"}, 2),
        ({"model": "b", "region": "eu"}, 3),
        ({"model": "a", "region": "eu"}, 4),
        ({"model": "b"}, 5),  # no region
    ]
    batch(
        server,
        [
            {
                "event_type": event_type,
                "customer": customer,
                "value": value,
                "timestamp": iso(r + timedelta(minutes=i)),
                "properties": props,
            }
            for i, (props, value) in enumerate(stream)
        ],
    )
    whole = span(r, r + timedelta(hours=1), customer)
    assert wait_value(c, meter, "15", whole) == "15"
    [total] = usage_rows(c, meter, whole)
    assert total["group"] == {}
    assert total["customer"] == customer

    def groups(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        return sorted(((row["group"], row["value"]) for row in rows), key=repr)

    both = usage_rows(c, meter, {**whole, "group_by": "model,region"})
    expected = [
        ({"model": "a", "region": "eu"}, "5"),
        ({"model": "a", "region": "us"}, "2"),
        ({"model": "b", "region": "eu"}, "3"),
        ({"model": "b", "region": None}, "5"),
    ]
    assert groups(both) == sorted(expected, key=repr)
    repeated = usage_rows(c, meter, {**whole, "group_by": ["model", "region"]})
    assert groups(repeated) == groups(both)
    by_model = usage_rows(c, meter, {**whole, "group_by": "model"})
    assert groups(by_model) == [({"model": "a"}, "7"), ({"model": "b"}, "8")]
    for row in both:
        assert (row["window_start"], row["window_end"]) == (whole["from"], whole["to"])


def by_customer(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((row["customer"], row["value"]) for row in rows)


def test_one_row_per_customer_without_a_customer_filter(server: Server) -> None:
    c, event_type = server.client, uid("calls")
    meter = uid("cnt")
    create_meter(c, key=meter, event_type=event_type, aggregation="COUNT")
    r = hours_ago(26)
    first, second = sorted([uid("cus"), uid("cus")])
    for customer, count in ((first, 2), (second, 3)):
        for i in range(count):
            at = iso(r + timedelta(minutes=i))
            send(c, event_type=event_type, customer=customer, timestamp=at)
    params = {"from": iso(r), "to": iso(r + timedelta(hours=1))}
    expected = [(first, "2"), (second, "3")]
    rows = wait_rows(c, meter, params, lambda rows: by_customer(rows) == expected)
    assert by_customer(rows) == expected
    assert usage_rows(c, meter, {**params, "customer": uid("nobody")}) == []


def test_hour_windows_in_kathmandu_start_at_quarter_past(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    meter = uid("cnt")
    create_meter(c, key=meter, event_type=event_type, aggregation="COUNT")
    r = hours_ago(50)
    for minutes in (20, 70, 80, 194):
        send(
            c,
            event_type=event_type,
            customer=customer,
            timestamp=iso(r + timedelta(minutes=minutes)),
        )
    start, end = r + timedelta(minutes=15), r + timedelta(minutes=195)
    params = span(start, end, customer, window_size="HOUR", time_zone="Asia/Kathmandu")
    at = lambda minutes: iso(r + timedelta(minutes=minutes))  # noqa: E731
    expected = [
        (at(15), at(75), "2"),
        (at(75), at(135), "1"),
        (at(135), at(195), "1"),
    ]
    rows = wait_rows(c, meter, params, lambda rows: windows_of(rows) == expected)
    assert windows_of(rows) == expected
    assert all(row["window_start"][14:16] == "15" for row in rows)
    # the same events in UTC hours
    utc = usage_rows(c, meter, span(r, r + timedelta(hours=4), customer, window_size="hour"))
    assert windows_of(utc) == [
        (at(0), at(60), "1"),
        (at(60), at(120), "2"),
        (at(180), at(240), "1"),
    ]


def test_day_windows_in_kolkata_start_at_1830_utc(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    meter = uid("sum")
    create_meter(c, key=meter, event_type=event_type, aggregation="SUM")
    d = days_ago_midnight(3)
    local_midnight = d - timedelta(hours=5, minutes=30)  # 00:00 IST on day d
    assert iso(local_midnight).endswith("T18:30:00Z")
    day = timedelta(days=1)
    for at, value in (
        (local_midnight, 1),  # exactly at a window start
        (d + timedelta(hours=10), 2),  # same IST day
        (local_midnight + day, 4),  # next IST day starts
        (local_midnight + 2 * day - timedelta(microseconds=1), 8),  # its last microsecond
        (local_midnight + 2 * day, 16),  # at `to`: not counted
    ):
        send(c, event_type=event_type, customer=customer, value=value, timestamp=iso(at))
    end = local_midnight + 2 * day
    params = span(local_midnight, end, customer, window_size="DAY", time_zone="Asia/Kolkata")
    expected = [
        (iso(local_midnight), iso(local_midnight + day), "3"),
        (iso(local_midnight + day), iso(local_midnight + 2 * day), "12"),
    ]
    rows = wait_rows(c, meter, params, lambda rows: windows_of(rows) == expected)
    assert windows_of(rows) == expected
    assert rows[0]["window_start"].endswith("T18:30:00Z")
    assert wait_value(c, meter, "31", span(local_midnight, local_midnight + 3 * day, customer)) == (
        "31"
    )


def test_from_is_inclusive_and_to_exclusive(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    meter = uid("cnt")
    create_meter(c, key=meter, event_type=event_type, aggregation="COUNT")
    one_us = timedelta(microseconds=1)
    aligned = hours_ago(45)
    ragged = hours_ago(43) + timedelta(minutes=7, seconds=3, microseconds=1)
    for start in (aligned, ragged):
        end = start + timedelta(hours=1)
        for at in (start - one_us, start, end - one_us, end):
            send(c, event_type=event_type, customer=customer, timestamp=iso(at))
    for start in (aligned, ragged):
        end = start + timedelta(hours=1)
        assert wait_value(c, meter, "2", span(start, end, customer)) == "2"
        listed = ok(
            c.get(
                "/v1/usage-events",
                params={"customer": customer, "from": iso(start), "to": iso(end)},
            )
        )["data"]
        assert [e["timestamp"] for e in listed] == [iso(start), iso(end - one_us)]
    # window rows keep the same edges
    rows = usage_rows(
        c,
        meter,
        span(aligned, aligned + timedelta(hours=1), customer, window_size="MINUTE"),
    )
    assert windows_of(rows) == [
        (iso(aligned), iso(aligned + timedelta(minutes=1)), "1"),
        (iso(aligned + timedelta(minutes=59)), iso(aligned + timedelta(hours=1)), "1"),
    ]


def test_include_aggregated_total_is_the_running_total(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    count, total = uid("cnt"), uid("sum")
    create_meter(c, key=count, event_type=event_type, aggregation="COUNT")
    create_meter(c, key=total, event_type=event_type, aggregation="SUM")
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # last month's usage is not in this period's total
    send(
        c,
        meter_id=total,
        customer=customer,
        value=100,
        timestamp=iso(month_start - timedelta(hours=1)),
    )
    send(c, meter_id=total, customer=customer, value=5)
    reply = ok(
        c.post(
            "/v1/usage-events",
            params={"include": "aggregated_total"},
            json={"idempotency_key": uid("k"), "meter_id": total, "customer": customer, "value": 7},
        )
    )
    assert reply["aggregated_total"] == "12"
    assert "aggregated_totals" not in reply

    reply = ok(
        c.post(
            "/v1/usage-events?include=aggregated_total",
            json={"event_type": event_type, "customer": customer, "value": "2.5"},
        )
    )
    assert reply["aggregated_totals"] == {count: "1", total: "14.5"}
    assert "aggregated_total" not in reply
    plain = send(c, event_type=event_type, customer=customer)
    assert "aggregated_total" not in plain and "aggregated_totals" not in plain


def test_customer_usage_is_the_current_month_in_its_timezone(server: Server) -> None:
    c, event_type = server.client, uid("calls")
    meter = uid("cnt")
    create_meter(c, key=meter, event_type=event_type, aggregation="COUNT")
    customer = uid("cus")
    # usage sent before the customer exists is kept and attributed to it
    for _ in range(3):
        send(c, event_type=event_type, customer=customer)
    assert c.get(f"/v1/customers/{customer}/usage").status_code == 404
    created = ok(
        c.post(
            "/v1/customers",
            json={
                "external_id": customer,
                "name": "Acme India",
                "email": "billing@example.in",
                "timezone": "Asia/Kolkata",
                "currency": "INR",
            },
        ),
        201,
    )
    assert created["external_id"] == customer
    assert created["id"].startswith("cus_")

    zone = ZoneInfo("Asia/Kolkata")
    local_now = datetime.now(zone)
    start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)

    def quantity() -> str | None:
        body = ok(c.get(f"/v1/customers/{customer}/usage"))
        return next((m["quantity"] for m in body["meters"] if m["meter"] == meter), None)

    assert eventually(quantity, lambda q: q == "3") == "3"
    body = ok(c.get(f"/v1/customers/{customer}/usage"))
    assert body["customer"] == customer
    assert body["period_start"] == iso(start)
    assert body["period_end"] == iso(end)
    assert body["period_start"].endswith("T18:30:00Z")  # the previous day, in UTC
    assert isinstance(body["total"], str)


def ist_month_start(now: datetime) -> datetime:
    """00:00 on the 1st of the current month in Asia/Kolkata, in UTC."""
    local = now.astimezone(ZoneInfo("Asia/Kolkata"))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def test_month_windows_follow_the_time_zone(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    meter = uid("cnt")
    create_meter(c, key=meter, event_type=event_type, aggregation="COUNT")
    now = datetime.now(UTC)
    this_month = ist_month_start(now)
    if now - this_month < timedelta(hours=1):
        pytest.skip("needs an hour of the current month in Asia/Kolkata to have passed")
    last_month = ist_month_start(this_month - timedelta(days=1))
    next_month = ist_month_start(this_month + timedelta(days=32))
    for at in (this_month - timedelta(minutes=1), this_month, this_month + timedelta(minutes=30)):
        send(c, event_type=event_type, customer=customer, timestamp=iso(at))
    params = span(last_month, next_month, customer, window_size="MONTH", time_zone="Asia/Kolkata")
    expected = [
        (iso(last_month), iso(this_month), "1"),
        (iso(this_month), iso(next_month), "2"),
    ]
    rows = wait_rows(c, meter, params, lambda rows: windows_of(rows) == expected)
    assert windows_of(rows) == expected
    assert iso(this_month).endswith("T18:30:00Z")


def test_running_total_and_customer_usage_follow_the_customer_timezone(server: Server) -> None:
    c, event_type = server.client, uid("calls")
    meter = uid("sum")
    create_meter(c, key=meter, event_type=event_type, aggregation="SUM")
    now = datetime.now(UTC)
    month = ist_month_start(now)  # e.g. 18:30Z on the last day of the previous UTC month
    if now - month < timedelta(hours=2):
        pytest.skip("needs two hours of the current month in Asia/Kolkata to have passed")
    india, utc = uid("cus_in"), uid("cus_utc")
    ok(c.post("/v1/customers", json={"external_id": india, "timezone": "Asia/Kolkata"}), 201)
    ok(c.post("/v1/customers", json={"external_id": utc, "timezone": "UTC"}), 201)
    totals = {}
    for customer in (india, utc):
        send(
            c,
            meter_id=meter,
            customer=customer,
            value=100,
            timestamp=iso(month - timedelta(hours=1)),
        )
        send(
            c,
            meter_id=meter,
            customer=customer,
            value=10,
            timestamp=iso(month + timedelta(hours=1)),
        )
        reply = ok(
            c.post(
                "/v1/usage-events?include=aggregated_total",
                json={"meter_id": meter, "customer": customer, "value": 1},
            )
        )
        totals[customer] = reply["aggregated_total"]
    utc_month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # in India's month: the 10 sent an hour after its start, and the 1 sent now
    assert totals[india] == "11"
    # a UTC month starts 5h30 later: the 10 (and the 100) belong to it only if they are after
    expected_utc = 1 + sum(
        value
        for value, at in ((100, month - timedelta(hours=1)), (10, month + timedelta(hours=1)))
        if at >= utc_month_start
    )
    assert totals[utc] == str(expected_utc)

    def quantity(customer: str) -> str | None:
        body = ok(c.get(f"/v1/customers/{customer}/usage"))
        return next((m["quantity"] for m in body["meters"] if m["meter"] == meter), None)

    assert quantity(india) == "11"
    assert quantity(utc) == str(expected_utc)


def test_sum_keeps_every_digit(server: Server) -> None:
    c, event_type, customer = server.client, uid("bytes"), uid("cus")
    meter = uid("sum")
    create_meter(c, key=meter, event_type=event_type, aggregation="SUM")
    r = hours_ago(8)
    for value in ("12345678901234567890.123456789", "1000"):
        reply = send(c, event_type=event_type, customer=customer, value=value, timestamp=iso(r))
        assert reply["value"] == value  # each event is kept exactly
    params = span(r, r + timedelta(hours=1), customer)
    both_counted = eventually(
        lambda: usage_value(c, meter, params),
        lambda v: v is not None and Decimal(v) > Decimal("12345678901234568000"),
    )
    assert both_counted == "12345678901234568890.123456789"


def test_customer_catalog_and_a_timezone_change(server: Server) -> None:
    c, customer = server.client, uid("cus")
    ok(c.post("/v1/customers", json={"external_id": customer, "currency": "usd"}), 201)
    duplicate = c.post("/v1/customers", json={"external_id": customer})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["field"] == "external_id"
    bad = c.post("/v1/customers", json={"external_id": uid("cus"), "timezone": "Nowhere/City"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "timezone")
    assert c.patch(f"/v1/customers/{uid('nobody')}", json={"timezone": "UTC"}).status_code == 404

    now = datetime.now(UTC)
    utc_start = iso(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    body = eventually(
        lambda: c.get(f"/v1/customers/{customer}/usage"), lambda r: r.status_code == 200
    )
    assert ok(body)["period_start"] == utc_start
    changed = ok(c.patch(f"/v1/customers/{customer}", json={"timezone": "Asia/Kolkata"}))
    assert changed["timezone"] == "Asia/Kolkata"
    assert changed["currency"] == "USD"
    body = eventually(
        lambda: ok(c.get(f"/v1/customers/{customer}/usage")),
        lambda b: b["period_start"] != utc_start,
    )
    assert body["period_start"] == iso(ist_month_start(datetime.now(UTC)))
