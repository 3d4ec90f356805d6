"""Prepaid wallets over real HTTP: idempotent top-ups, grants, drawdown within a second."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.e2e.support import Server, error_of, iso, ok, uid

D = Decimal


def _customer_with_plan(server: Server, unit_price: str = "0.25") -> tuple[str, str]:
    c = server.client
    who, meter, plan = uid("cus"), uid("m"), uid("p")
    ok(c.post("/v1/customers", json={"external_id": who, "timezone": "Asia/Kolkata"}), 201)
    ok(c.post("/v1/meters", json={"key": meter, "event_type": meter, "aggregation": "COUNT"}), 201)
    ok(
        c.post(
            "/v1/plans",
            json={
                "key": plan,
                "currency": "USD",
                "interval": "month",
                "prices": [{"meter": meter, "model": "per_unit", "unit_price": unit_price}],
            },
        ),
        201,
    )
    start = datetime.now(UTC) - timedelta(days=1)
    ok(
        c.post("/v1/subscriptions", json={"customer": who, "plan": plan, "start_at": iso(start)}),
        201,
    )
    return who, meter


def test_top_ups_are_idempotent_and_every_movement_is_listed(server: Server) -> None:
    c = server.client
    who = uid("cus")
    ok(c.post("/v1/customers", json={"external_id": who}), 201)
    wallet = ok(c.post("/v1/wallets", json={"customer": who, "currency": "USD"}), 201)
    assert wallet["id"].startswith("wal_") and wallet["balance"] == "0"
    error_of(c.post("/v1/wallets", json={"customer": who, "currency": "USD"}), 409)
    path = f"/v1/wallets/{wallet['id']}"
    first = ok(c.post(path + "/top-ups", json={"amount": "25.50", "idempotency_key": "k1"}))
    again = ok(c.post(path + "/top-ups", json={"amount": 25.50, "idempotency_key": "k1"}))
    assert first["status"] == "accepted" and again["status"] == "duplicate"
    assert again["id"] == first["id"]
    conflict = error_of(
        c.post(path + "/top-ups", json={"amount": "9", "idempotency_key": "k1"}), 409
    )
    assert conflict["field"] == "idempotency_key"
    assert (
        error_of(c.post(path + "/top-ups", json={"amount": "-1", "idempotency_key": "k2"}), 422)[
            "field"
        ]
        == "amount"
    )
    ok(
        c.post(
            path + "/grants",
            json={"amount": "5", "expires_at": iso(datetime.now(UTC) + timedelta(days=3))},
        )
    )
    deadline = time.monotonic() + 5
    while ok(c.get(path))["balance"] != "30.50" and time.monotonic() < deadline:
        time.sleep(0.05)
    shown = ok(c.get(path))
    assert (shown["balance"], shown["paid_balance"], shown["granted_balance"]) == (
        "30.50",
        "25.50",
        "5",
    )
    moves = ok(c.get(path + "/transactions"))["data"]
    assert [(m["type"], m["amount"], m["balance_after"]) for m in moves] == [
        ("top_up", "25.50", "25.50"),
        ("grant", "5", "30.50"),
    ]
    assert moves[0]["cause"]["idempotency_key"] == "k1"


def test_usage_is_debited_within_a_second_of_the_ingest_reply(server: Server) -> None:
    c = server.client
    who, meter = _customer_with_plan(server)
    wallet = ok(
        c.post(
            "/v1/wallets", json={"customer": who, "currency": "USD", "block_on_depletion": True}
        ),
        201,
    )
    path = f"/v1/wallets/{wallet['id']}"
    ok(c.post(path + "/top-ups", json={"amount": "10", "idempotency_key": uid("t")}))
    expected = D(10)
    for round_ in range(3):
        events = [
            {"idempotency_key": uid("e"), "event_type": meter, "customer": who} for _ in range(4)
        ]
        ok(c.post("/v1/usage-events/batch", json={"events": events}))
        acknowledged = time.monotonic()
        expected -= 4 * D("0.25")
        while D(ok(c.get(path))["balance"]) != expected:
            assert time.monotonic() - acknowledged < 1.0, (round_, ok(c.get(path)))
            time.sleep(0.02)
    moves = ok(c.get(path + "/transactions"))["data"]
    debits = [m for m in moves if m["type"] == "debit"]
    assert sum(D(m["amount"]) for m in debits) == D("-3.00")
    assert all(m["cause"]["charge"].startswith("chg_") for m in debits)
    assert sum(len(m["cause"]["usage_events"]) for m in debits) == 12


def test_another_tenants_wallet_is_404(server: Server, other_tenant) -> None:
    c = server.client
    who = uid("cus")
    ok(c.post("/v1/customers", json={"external_id": who}), 201)
    wallet = ok(c.post("/v1/wallets", json={"customer": who}), 201)
    error_of(other_tenant.get(f"/v1/wallets/{wallet['id']}"), 404)
    error_of(
        other_tenant.post(
            f"/v1/wallets/{wallet['id']}/top-ups", json={"amount": "1", "idempotency_key": "x"}
        ),
        404,
    )


def test_a_customer_reads_back_as_created(server: Server, other_tenant) -> None:
    c = server.client
    who = uid("cus")
    created = ok(
        c.post(
            "/v1/customers",
            json={"external_id": who, "timezone": "Asia/Kolkata", "currency": "EUR", "name": "Ada"},
        ),
        201,
    )
    shown = ok(c.get(f"/v1/customers/{who}"))
    assert shown == created
    error_of(other_tenant.get(f"/v1/customers/{who}"), 404)
    ok(c.patch(f"/v1/customers/{who}", json={"name": "Ada L."}))
    assert ok(c.get(f"/v1/customers/{who}"))["name"] == "Ada L."
