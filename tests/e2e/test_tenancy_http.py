"""Tenancy and cancellation over real HTTP: tenants never see each other's data, and a
cancelled event leaves usage once."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import httpx

from tests.e2e.support import (
    Server,
    create_meter,
    error_of,
    eventually,
    hours_ago,
    iso,
    list_events,
    ok,
    send,
    uid,
    usage_rows,
    usage_value,
    wait_events,
    wait_value,
)


def test_tenants_with_identical_keys_never_see_each_other(
    server: Server, other_tenant: httpx.Client
) -> None:
    a, b = server.client, other_tenant
    meter, event_type, customer, key = uid("met"), uid("calls"), uid("cus"), uid("evt")
    for client in (a, b):
        create_meter(client, key=meter, event_type=event_type, aggregation="SUM")
    r = hours_ago(12)
    event = {
        "idempotency_key": key,
        "event_type": event_type,
        "customer": customer,
        "timestamp": iso(r),
    }
    mine = send(a, **event, value=5)
    theirs = send(b, **event, value=7)  # same key, other payload: its own event, no 409
    assert mine["status"] == theirs["status"] == "accepted"
    assert mine["id"] != theirs["id"]
    # a retry in each tenant is a duplicate of its own event
    assert send(a, **event, value=5)["id"] == mine["id"]
    assert send(b, **event, value=7)["id"] == theirs["id"]

    [seen_a] = wait_events(a, 1, customer=customer)
    [seen_b] = wait_events(b, 1, customer=customer)
    assert (seen_a["id"], seen_a["value"]) == (mine["id"], "5")
    assert (seen_b["id"], seen_b["value"]) == (theirs["id"], "7")
    assert all(e["id"] != theirs["id"] for e in list_events(a))
    assert all(e["id"] != mine["id"] for e in list_events(b))

    params = {"customer": customer, "from": iso(r), "to": iso(r + timedelta(hours=1))}
    assert wait_value(a, meter, "5", params) == "5"
    assert wait_value(b, meter, "7", params) == "7"
    params_all = {"from": iso(r), "to": iso(r + timedelta(hours=1))}
    assert [
        row["value"] for row in ok(a.get(f"/v1/meters/{meter}/usage", params=params_all))["data"]
    ] == ["5"]

    # the other tenant's event id answers 404, exactly like a missing one
    foreign = error_of(b.post(f"/v1/usage-events/{mine['id']}/cancel", json={"reason": "x"}), 404)
    missing = error_of(b.post(f"/v1/usage-events/evt_{'0' * 32}/cancel", json={"reason": "x"}), 404)
    assert foreign["type"] == missing["type"] == "not_found"
    assert wait_value(a, meter, "5", params) == "5"  # still counted


def test_meters_and_customers_are_per_tenant(server: Server, other_tenant: httpx.Client) -> None:
    a, b = server.client, other_tenant
    meter, customer = uid("met"), uid("cus")
    create_meter(a, key=meter, event_type=uid("t"), aggregation="COUNT")
    assert ok(a.get(f"/v1/meters/{meter}"))["key"] == meter
    assert error_of(b.get(f"/v1/meters/{meter}"), 404)
    assert error_of(b.get(f"/v1/meters/{meter}/usage"), 404)
    refused = error_of(
        b.post("/v1/usage-events", json={"meter_id": meter, "customer": customer}), 422
    )
    assert refused["field"] == "meter_id"
    assert meter not in [m["key"] for m in ok(b.get("/v1/meters"))["data"]]

    ok(a.post("/v1/customers", json={"external_id": customer, "timezone": "Asia/Kolkata"}), 201)
    assert error_of(b.get(f"/v1/customers/{customer}/usage"), 404)
    # the same external id is free in the other tenant, with its own settings
    ok(b.post("/v1/customers", json={"external_id": customer, "timezone": "UTC"}), 201)
    usage_a = eventually(
        lambda: a.get(f"/v1/customers/{customer}/usage"), lambda r: r.status_code == 200
    )
    usage_b = eventually(
        lambda: b.get(f"/v1/customers/{customer}/usage"), lambda r: r.status_code == 200
    )
    assert ok(usage_a)["period_start"].endswith("T18:30:00Z")
    assert ok(usage_b)["period_start"].endswith("T00:00:00Z")


def test_cancel_removes_the_event_from_usage_once(server: Server) -> None:
    c, event_type, customer = server.client, uid("calls"), uid("cus")
    meters = {}
    for aggregation in ("COUNT", "SUM", "LAST", "MAX", "UNIQUE_COUNT"):
        meters[aggregation] = uid(aggregation.lower())
        create_meter(
            c,
            key=meters[aggregation],
            event_type=event_type,
            aggregation=aggregation,
            unique_property="user_id",
        )
    r = hours_ago(14)
    a, b, _, d = [
        send(
            c,
            event_type=event_type,
            customer=customer,
            value=value,
            timestamp=iso(r + timedelta(minutes=minute)),
            properties={"user_id": user},
        )
        for minute, value, user in ((1, 2, "u1"), (5, 10, "u3"), (20, 3, "u2"), (40, 4, "u1"))
    ]
    params = {"customer": customer, "from": iso(r), "to": iso(r + timedelta(hours=1))}

    def values() -> dict[str, str | None]:
        return {name: usage_value(c, key, params) for name, key in meters.items()}

    before = {"COUNT": "4", "SUM": "19", "LAST": "4", "MAX": "10", "UNIQUE_COUNT": "3"}
    assert eventually(values, lambda v: v == before) == before

    # the latest event goes: LAST falls back to the one before it
    reply = ok(c.post(f"/v1/usage-events/{d['id']}/cancel", json={"reason": "sent twice"}))
    assert (reply["id"], reply["status"]) == (d["id"], "cancelled")
    after_d = {"COUNT": "3", "SUM": "15", "LAST": "3", "MAX": "10", "UNIQUE_COUNT": "3"}
    assert eventually(values, lambda v: v == after_d) == after_d

    again = error_of(c.post(f"/v1/usage-events/{d['id']}/cancel", json={"reason": "x"}), 409)
    assert again["type"] == "conflict"

    # an event sharing its 15-minute bucket with another; a cancel without a body is fine
    assert ok(c.post(f"/v1/usage-events/{b['id']}/cancel"))["status"] == "cancelled"
    after_b = {"COUNT": "2", "SUM": "5", "LAST": "3", "MAX": "3", "UNIQUE_COUNT": "2"}
    assert eventually(values, lambda v: v == after_b) == after_b
    minutes = usage_rows(c, meters["SUM"], {**params, "window_size": "MINUTE"})
    assert [row["value"] for row in minutes] == ["2", "3"]
    listed = {e["id"]: e["status"] for e in list_events(c, customer=customer)}
    assert sorted(listed.values()) == ["accepted", "accepted", "cancelled", "cancelled"]
    assert listed[b["id"]] == listed[d["id"]] == "cancelled"
    assert listed[a["id"]] == "accepted"


def test_cancel_of_an_unknown_event_is_404(server: Server) -> None:
    c = server.client
    for event_id in (f"evt_{'f' * 32}", "evt_not-an-id", "nope"):
        error = error_of(c.post(f"/v1/usage-events/{event_id}/cancel", json={"reason": "x"}), 404)
        assert error["type"] == "not_found"


def test_a_revoked_key_is_refused(server: Server) -> None:
    key = server.create_tenant(uid("revoked"))
    with server.client_for(key) as client:
        ok(client.get("/v1/usage-events"))
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "tenants", "keys", "revoke", key],
            cwd=server.process.workdir,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # keys are cached for about a second
        response = eventually(
            lambda: client.get("/v1/usage-events"), lambda r: r.status_code == 401
        )
        assert error_of(response, 401)["type"] == "authentication_error"
