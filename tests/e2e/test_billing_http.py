"""Billing over real HTTP: every pricing model through a real invoice to the cent, traces
of thousands of events page by page, the upcoming invoice, policies and tenancy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from tests.e2e.support import Server, create_meter, error_of, eventually, hours_ago, iso, ok, uid

D = Decimal


def customer(c: httpx.Client, currency: str = "USD", timezone: str = "UTC") -> str:
    name = uid("cus")
    ok(
        c.post(
            "/v1/customers", json={"external_id": name, "currency": currency, "timezone": timezone}
        ),
        201,
    )
    return name


def batch(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        reply = ok(c.post("/v1/usage-events/batch", json={"events": events[start : start + 1000]}))
        assert reply["rejected"] == 0, reply["results"][:3]


def closed_invoice(c: httpx.Client, who: str) -> dict[str, Any]:
    """Run billing now; the customer's one regular invoice (the scheduler may get there
    first: either way it is issued once)."""
    ok(c.post("/v1/billing-runs", json={}))
    found = ok(c.get("/v1/invoices", params={"customer": who}))["data"]
    [invoice] = [i for i in found if i["kind"] == "regular"]
    return invoice


def last_week(c: httpx.Client, plan: dict[str, Any], currency: str = "USD") -> tuple[str, datetime]:
    """A customer on `plan` since eight days ago: its first week has ended."""
    ok(c.post("/v1/plans", json={"interval": "week", "currency": currency, **plan}), 201)
    who = customer(c, currency)
    start = hours_ago(8 * 24)
    sub = ok(
        c.post(
            "/v1/subscriptions", json={"customer": who, "plan": plan["key"], "start_at": iso(start)}
        ),
        201,
    )
    assert sub["id"].startswith("sub_") and sub["current_period_start"] == iso(
        start + timedelta(days=7)
    )
    return who, start


def test_every_pricing_model_is_billed_through_a_real_invoice(server: Server) -> None:
    c = server.client
    keys = {m: uid(m) for m in ("tokens", "storage", "calls", "bytes", "payments", "gmv", "seats")}
    for name, key in keys.items():
        aggregation = "COUNT" if name == "calls" else "SUM"
        create_meter(c, key=key, event_type=key, aggregation=aggregation)
    prices = [
        {
            "meter": keys["tokens"],
            "model": "per_unit",
            "unit_price": "0.75",
            "divide_by": 1000,
            "rounding": "up",
        },
        {
            "meter": keys["storage"],
            "model": "graduated",
            "tiers": [
                {"up_to": 100, "unit_price": "0.10", "flat_fee": "5"},
                {"up_to": 1000, "unit_price": "0.05"},
                {"up_to": None, "unit_price": "0.01"},
            ],
        },
        {
            "meter": keys["calls"],
            "model": "volume",
            "tiers": [
                {"up_to": 10, "unit_price": "2"},
                {"up_to": None, "unit_price": "1.5", "flat_fee": "3"},
            ],
        },
        {
            "meter": keys["bytes"],
            "model": "package",
            "package_size": 100,
            "package_price": "9.99",
            "included_units": 50,
        },
        {
            "meter": keys["payments"],
            "model": "percentage",
            "rate": "2.9",
            "fixed_fee_per_event": "0.30",
            "min_per_event": "0.50",
            "free_events": 1,
        },
        {
            "meter": keys["gmv"],
            "model": "graduated_percentage",
            "maximum_amount": 12,
            "tiers": [{"up_to": 1000, "rate": "1"}, {"up_to": None, "rate": "0.5"}],
        },
        {"meter": keys["seats"], "model": "per_unit", "unit_price": 1, "minimum_amount": 5},
    ]
    plan = uid("all_models")
    who, start = last_week(c, {"key": plan, "prices": prices})
    values = {
        "tokens": [1500, 2500, 999],  # 4999 -> 5 thousands
        "storage": ["1000", "234.5"],
        "calls": [1] * 12,
        "bytes": [300, 51],
        "payments": [100, 10, 1000],
        "gmv": [700, 800],
        "seats": [],
    }
    events = [
        {
            "idempotency_key": uid("e"),
            "event_type": keys[name],
            "customer": who,
            "value": v,
            "timestamp": iso(start + timedelta(hours=1 + i)),
        }
        for name, vs in values.items()
        for i, v in enumerate(vs)
    ]
    batch(c, events)
    invoice = closed_invoice(c, who)
    amounts = {x["meter"]: x["amount"] for x in invoice["lines"]}
    expected = {
        keys["tokens"]: "3.75",  # 5 x 0.75
        keys["storage"]: "62.35",  # 15 + 45 + 2.345, half-up
        keys["calls"]: "21.00",  # all 12 at 1.50 + 3 flat
        keys["bytes"]: "39.96",  # 351 - 50 free -> 4 packages
        keys["payments"]: "29.89",  # free, 0.59, 29.30
        keys["gmv"]: "12.00",  # 10 + 2.50, capped at 12
        keys["seats"]: "5.00",  # the price's minimum at zero usage
    }
    assert amounts == expected
    assert invoice["total"] == invoice["subtotal"] == "173.95"
    assert (invoice["status"], invoice["plan"], invoice["plan_version"]) == ("finalized", plan, 1)
    assert invoice["period_start"] == iso(start)
    assert invoice["period_end"] == iso(start + timedelta(days=7))
    assert invoice["wallet_applied"] == "0.00" and invoice["credits_applied"] == "0.00"
    storage = next(x for x in invoice["lines"] if x["meter"] == keys["storage"])
    assert [t["amount"] for t in storage["tiers"]] == ["15", "45", "2.345"]

    # the evaluate endpoint computes exactly what the line holds, before rounding
    for price, line in zip(prices, invoice["lines"], strict=False):
        name = next(n for n, k in keys.items() if k == price["meter"])
        body: dict[str, Any] = {"price": {k: v for k, v in price.items() if k != "meter"}}
        if price["model"] == "percentage":
            body["events"] = [str(v) for v in values[name]]
        else:
            body["quantity"] = line["quantity"]
        evaluated = ok(c.post("/v1/prices/evaluate", json=body))
        assert evaluated["amount"] == line["amount_exact"], name


def test_jpy_and_kwd_round_to_their_minor_units(server: Server) -> None:
    c = server.client
    for currency, unit_price, total in (("JPY", "0.5", "2"), ("KWD", "0.0125", "0.038")):
        meter = uid("m")
        create_meter(c, key=meter, event_type=meter, aggregation="COUNT")
        plan = {
            "key": uid("p"),
            "prices": [{"meter": meter, "model": "per_unit", "unit_price": unit_price}],
        }
        who, start = last_week(c, plan, currency)
        batch(
            c,
            [
                {"event_type": meter, "customer": who, "timestamp": iso(start + timedelta(hours=h))}
                for h in range(3)
            ],
        )
        invoice = closed_invoice(c, who)
        assert (invoice["currency"], invoice["total"], invoice["lines"][0]["amount"]) == (
            currency,
            total,
            total,
        )


def test_a_line_with_thousands_of_events_is_traced_page_by_page(server: Server) -> None:
    c = server.client
    meter = uid("tokens")
    create_meter(c, key=meter, event_type=meter, aggregation="SUM", value_property="tokens")
    who, start = last_week(
        c,
        {"key": uid("p"), "prices": [{"meter": meter, "model": "per_unit", "unit_price": "0.001"}]},
    )
    count = 3000
    batch(
        c,
        [
            {
                "idempotency_key": f"{who}-{i}",
                "event_type": meter,
                "customer": who,
                "timestamp": iso(start + timedelta(seconds=60 * i + 1, microseconds=i)),
                "properties": {"tokens": f"{i % 97}.5"},
            }
            for i in range(count)
        ],
    )
    invoice = closed_invoice(c, who)
    line = invoice["lines"][0]
    assert D(line["quantity"]) == sum(D(f"{i % 97}.5") for i in range(count))
    url = f"/v1/invoices/{invoice['id']}/lines/{line['id']}/events"
    seen, total, cursor, pages = [], D(0), None, 0
    while True:
        params: dict[str, Any] = {"limit": 700}
        if cursor:
            params["cursor"] = cursor
        page = ok(c.get(url, params=params))
        pages += 1
        for event in page["data"]:
            assert set(event) == {"id", "idempotency_key", "timestamp", "value"}
            seen.append(event["idempotency_key"])
            total += D(event["value"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == [f"{who}-{i}" for i in range(count)]  # log order, each once
    assert total == D(line["quantity"])
    assert error_of(c.get(url, params={"limit": 1001}), 422)["field"] == "limit"
    fee_less = ok(c.get(url, params={"limit": 1}))
    assert fee_less["data"][0]["timestamp"] == iso(start + timedelta(seconds=1))


def test_upcoming_invoice_and_customer_usage_show_the_open_period(server: Server) -> None:
    c = server.client
    meter = uid("calls")
    create_meter(c, key=meter, event_type=meter, aggregation="COUNT")
    plan = uid("p")
    ok(
        c.post(
            "/v1/plans",
            json={
                "key": plan,
                "interval": "month",
                "base_fee": {"amount": "20", "timing": "in_arrears"},
                "included_credits": "1",
                "prices": [{"meter": meter, "model": "per_unit", "unit_price": "0.25"}],
            },
        ),
        201,
    )
    who = customer(c)
    start = hours_ago(3)
    ok(
        c.post("/v1/subscriptions", json={"customer": who, "plan": plan, "start_at": iso(start)}),
        201,
    )
    batch(
        c,
        [
            {"event_type": meter, "customer": who, "timestamp": iso(start + timedelta(minutes=m))}
            for m in range(10)
        ],
    )
    upcoming = eventually(
        lambda: ok(c.get(f"/v1/customers/{who}/upcoming-invoice")),
        lambda u: u["lines"][0]["quantity"] == "10",
    )
    assert upcoming["status"] == "upcoming" and upcoming["id"] is None
    assert upcoming["period_start"] == iso(start)
    assert [(x["type"], x["amount"]) for x in upcoming["lines"]] == [
        ("usage", "2.50"),
        ("base_fee", "20.00"),
    ]
    assert (upcoming["credits_applied"], upcoming["total"]) == ("1.00", "21.50")
    usage = ok(c.get(f"/v1/customers/{who}/usage"))
    assert usage["period_start"] == iso(start)
    assert [m for m in usage["meters"] if m["meter"] == meter] == [
        {"meter": meter, "quantity": "10", "amount": "2.50"}
    ]
    assert usage["total"] == "2.50"
    # a cancelled event leaves the usage and the open period's charge
    first = ok(c.get("/v1/usage-events", params={"customer": who, "limit": 1}))["data"][0]
    ok(c.post(f"/v1/usage-events/{first['id']}/cancel", json={"reason": "duplicate"}))
    upcoming = eventually(
        lambda: ok(c.get(f"/v1/customers/{who}/upcoming-invoice")),
        lambda u: u["lines"][0]["quantity"] == "9",
    )
    assert upcoming["lines"][0]["amount"] == "2.25"
    nobody = customer(c)
    assert error_of(c.get(f"/v1/customers/{nobody}/upcoming-invoice"), 404)


def test_billing_runs_are_idempotent_and_closed_usage_cannot_be_cancelled(server: Server) -> None:
    c = server.client
    meter = uid("calls")
    create_meter(c, key=meter, event_type=meter, aggregation="COUNT")
    who, start = last_week(
        c, {"key": uid("p"), "prices": [{"meter": meter, "model": "per_unit", "unit_price": "1"}]}
    )
    sent = ok(
        c.post(
            "/v1/usage-events",
            json={
                "event_type": meter,
                "customer": who,
                "timestamp": iso(start + timedelta(hours=2)),
            },
        )
    )
    invoice = closed_invoice(c, who)
    again = ok(c.post("/v1/billing-runs", json={"as_of": iso(datetime.now(UTC))}))
    assert invoice["id"] not in again["invoices"]
    assert [i["id"] for i in ok(c.get("/v1/invoices", params={"customer": who}))["data"]] == [
        invoice["id"]
    ]
    assert ok(c.get(f"/v1/invoices/{invoice['id']}")) == invoice
    error = error_of(c.post(f"/v1/usage-events/{sent['id']}/cancel", json={"reason": "x"}), 409)
    assert "closed" in error["message"]
    future = iso(datetime.now(UTC) + timedelta(days=1))
    assert error_of(c.post("/v1/billing-runs", json={"as_of": future}), 422)["field"] == "as_of"


def test_the_late_event_policy_is_a_tenant_setting(
    server: Server, other_tenant: httpx.Client
) -> None:
    c = other_tenant
    assert ok(c.get("/v1/tenant"))["late_event_policy"] == "next_period"
    changed = ok(c.patch("/v1/tenant", json={"late_event_policy": "ignore"}))
    assert (changed["late_event_policy"], changed["late_event_policy_is_default"]) == (
        "ignore",
        False,
    )
    assert ok(c.get("/v1/tenant"))["late_event_policy"] == "ignore"
    assert error_of(c.patch("/v1/tenant", json={"late_event_policy": "later"}), 422)["field"] == (
        "late_event_policy"
    )
    reset = ok(c.patch("/v1/tenant", json={"late_event_policy": None}))
    assert reset["late_event_policy_is_default"] is True
    assert ok(c.get("/v1/late-usage-events", params={"policy": "ignore"}))["data"] == []


def test_plans_subscriptions_and_invoices_are_scoped_to_the_tenant(
    server: Server, other_tenant: httpx.Client
) -> None:
    c = server.client
    meter = uid("calls")
    create_meter(c, key=meter, event_type=meter, aggregation="COUNT")
    plan = uid("p")
    who, _ = last_week(
        c, {"key": plan, "prices": [{"meter": meter, "model": "per_unit", "unit_price": "1"}]}
    )
    invoice = closed_invoice(c, who)
    line = invoice["lines"][0]
    subscription = invoice["subscription"]
    for path in (
        f"/v1/invoices/{invoice['id']}",
        f"/v1/invoices/{invoice['id']}/lines/{line['id']}/events",
        f"/v1/subscriptions/{subscription}",
        f"/v1/plans/{plan}",
        f"/v1/customers/{who}/upcoming-invoice",
    ):
        assert error_of(other_tenant.get(path), 404)
    assert error_of(other_tenant.post(f"/v1/subscriptions/{subscription}/cancel"), 404)
    assert ok(other_tenant.get("/v1/invoices", params={"customer": who}))["data"] == []
    assert ok(c.get(f"/v1/plans/{plan}"))["version"] == 1
    revised = ok(c.patch(f"/v1/plans/{plan}", json={"name": "Renamed"}))
    assert (revised["version"], revised["name"]) == (2, "Renamed")
    assert ok(c.get(f"/v1/plans/{plan}", params={"version": 1}))["name"] == plan
    cancelled = ok(c.post(f"/v1/subscriptions/{subscription}/cancel"))
    assert cancelled["cancel_at"] == cancelled["current_period_end"]


def test_invalid_billing_requests_name_the_field(server: Server) -> None:
    c = server.client
    meter = uid("calls")
    create_meter(c, key=meter, event_type=meter, aggregation="COUNT")
    tiers = [{"up_to": 10, "unit_price": 1}, {"up_to": 5, "unit_price": 1}, {"unit_price": 1}]
    cases = [
        (
            {"key": uid("p"), "prices": [{"meter": meter, "model": "graduated", "tiers": tiers}]},
            "prices.0.tiers.1.up_to",
        ),
        (
            {
                "key": uid("p"),
                "prices": [{"meter": uid("none"), "model": "per_unit", "unit_price": 1}],
            },
            "prices.0.meter",
        ),
        (
            {"key": uid("p"), "prices": [{"meter": meter, "model": "percentage", "rate": 1}]},
            "prices.0.meter",
        ),
        ({"key": uid("p"), "interval": "fortnight"}, "interval"),
    ]
    for body, field in cases:
        assert error_of(c.post("/v1/plans", json=body), 422)["field"] == field
    plan = uid("p")
    ok(c.post("/v1/plans", json={"key": plan}), 201)
    assert error_of(c.post("/v1/plans", json={"key": plan}), 409)["field"] == "key"
    assert (
        error_of(c.post("/v1/subscriptions", json={"customer": uid("x"), "plan": plan}), 422)[
            "field"
        ]
        == "customer"
    )
    yen = customer(c, currency="JPY")
    assert (
        error_of(c.post("/v1/subscriptions", json={"customer": yen, "plan": plan}), 422)["field"]
        == "plan"
    )
    assert error_of(
        c.post("/v1/prices/evaluate", json={"price": {"model": "linear"}, "quantity": 1}), 422
    )["field"] == ("price.model")
    assert error_of(
        c.post(
            "/v1/prices/evaluate",
            json={"price": {"model": "per_unit", "unit_price": 1}, "quantity": -1},
        ),
        422,
    )["field"] == ("quantity")
    assert error_of(c.post("/v1/billing-runs", content=b"{"), 400)
