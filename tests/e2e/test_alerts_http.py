"""Budgets, the access check and webhooks over real HTTP against `xtopay serve`
(embedded mode: in-process dramatiq queue, in-memory access cache)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.support import Server, ServerProcess, create_meter, error_of, eventually, ok, uid
from tests.integration.alerts_support import receiver

pytestmark = pytest.mark.slow


class AlertsServerProcess(ServerProcess):
    """The server with a 0.2 s webhook retry base, so retries happen within a test."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "XTOPAY_WEBHOOK_RETRY_BASE_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def alerts_server(
    e2e_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of this module's own (the shared one keeps the 30 s default)."""
    process = AlertsServerProcess(e2e_database_url, tmp_path_factory.mktemp("e2e-alerts"))
    process.start()
    assert process.key is not None
    client = httpx.Client(
        base_url=process.base_url, headers={"Authorization": f"Bearer {process.key}"}, timeout=30
    )
    try:
        yield Server(process, process.key, client)
    finally:
        client.close()
        process.stop()


def _customer_with_meter(client: httpx.Client) -> tuple[str, str, str]:
    customer, meter, event_type = uid("cus"), uid("tokens"), uid("llm")
    ok(client.post("/v1/customers", json={"external_id": customer}), 201)
    create_meter(
        client, key=meter, event_type=event_type, aggregation="SUM", value_property="tokens"
    )
    return customer, meter, event_type


def _events(event_type: str, customer: str, *tokens: int) -> dict:
    return {
        "events": [
            {
                "idempotency_key": uid("k"),
                "event_type": event_type,
                "customer": customer,
                "properties": {"tokens": t},
            }
            for t in tokens
        ]
    }


def test_blocked_within_a_second_of_the_ingest_reply(alerts_server: Server) -> None:
    client = alerts_server.client
    customer, meter, event_type = _customer_with_meter(client)
    budget = ok(
        client.post(
            "/v1/budgets", json={"customer": customer, "meter": meter, "units": 10, "block_at": 100}
        ),
        201,
    )
    assert budget["id"].startswith("bud_") and budget["thresholds"] == [80, 100]
    assert (budget["kind"], budget["units"], budget["blocked"]) == ("units", "10", False)
    path = f"/v1/customers/{customer}/access"
    assert ok(client.get(path, params={"meter": meter})) == {"allowed": True, "reasons": []}

    reply = ok(client.post("/v1/usage-events/batch", json=_events(event_type, customer, 4, 4, 4)))
    replied = time.monotonic()
    assert reply["accepted"] == 3
    access = eventually(
        lambda: ok(client.get(path, params={"meter": meter})),
        lambda body: not body["allowed"],
        timeout=1.0,
        interval=0.01,
    )
    elapsed = time.monotonic() - replied
    assert access["allowed"] is False, access
    assert elapsed < 1.0
    [reason] = access["reasons"]
    assert reason["type"] == "budget_exceeded" and reason["budget"] == budget["id"]
    assert (reason["meter"], reason["threshold"], reason["limit"]) == (meter, 100, "10")
    assert ok(client.get(path))["allowed"] is False  # without a meter: any block counts

    # usage sent while blocked is stored and counted
    more = ok(client.post("/v1/usage-events/batch", json=_events(event_type, customer, 5)))
    assert more["accepted"] == 1
    stored = eventually(
        lambda: ok(client.get("/v1/usage-events", params={"customer": customer}))["data"],
        lambda data: len(data) == 4,
    )
    assert len(stored) == 4
    listed = eventually(
        lambda: ok(client.get("/v1/budgets", params={"customer": customer}))["data"],
        lambda data: data and data[0]["measured"] == "17",
    )
    assert listed[0]["crossed_thresholds"] == [80, 100] and listed[0]["blocked"] is True

    changed = client.post(
        "/v1/budgets", json={"customer": customer, "meter": meter, "units": 100, "block_at": 100}
    )
    assert ok(changed, 200)["units"] == "100"
    assert (
        eventually(
            lambda: ok(client.get(path, params={"meter": meter})), lambda body: body["allowed"]
        )["allowed"]
        is True
    )


def test_webhooks_are_signed_and_retried_with_the_same_id(alerts_server: Server) -> None:
    client = alerts_server.client
    customer, meter, event_type = _customer_with_meter(client)
    with receiver(codes=[500, 502]) as hook:
        created = ok(
            client.post(
                "/v1/webhook-endpoints", json={"url": hook.url, "event_types": ["access.blocked"]}
            ),
            201,
        )
        secret = created["secret"]
        assert secret.startswith("whsec_") and created["id"].startswith("we_")
        listed = ok(client.get("/v1/webhook-endpoints"))["data"]
        mine = [e for e in listed if e["id"] == created["id"]]
        assert len(mine) == 1 and "secret" not in mine[0]
        ok(
            client.post(
                "/v1/budgets",
                json={"customer": customer, "meter": meter, "units": 10, "block_at": 100},
            ),
            201,
        )
        ok(client.post("/v1/usage-events/batch", json=_events(event_type, customer, 11)))
        eventually(lambda: hook.requests, lambda r: len(r) >= 3, timeout=10)
        assert len(hook.requests) == 3
        ids = {r.headers["webhook-id"] for r in hook.requests}
        assert len(ids) == 1 and next(iter(ids)).startswith("whe_")
        for request in hook.requests:
            payload = Webhook(secret).verify(request.body, request.headers)
            assert payload["type"] == "access.blocked"
            assert payload["data"]["customer"] == customer
        deliveries = eventually(
            lambda: ok(client.get("/v1/webhook-deliveries", params={"endpoint": created["id"]})),
            lambda body: body["data"] and body["data"][0]["status"] == "delivered",
        )
    [delivery] = deliveries["data"]
    assert deliveries["next_cursor"] is None
    assert delivery["id"] in ids and delivery["type"] == "access.blocked"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 502, 200]
    assert delivery["attempts"][0]["next_retry_at"] is not None
    assert delivery["attempts"][2]["next_retry_at"] is None
    assert delivery["attempt_count"] == 3 and delivery["next_retry_at"] is None


def test_errors_follow_the_contract(alerts_server: Server) -> None:
    client = alerts_server.client
    customer, meter, _ = _customer_with_meter(client)
    assert (
        error_of(client.post("/v1/budgets", json={"customer": customer, "meter": meter}), 422)[
            "field"
        ]
        == "units"
    )
    assert (
        error_of(
            client.post(
                "/v1/budgets", json={"customer": customer, "amount": 5, "thresholds": [80, 0]}
            ),
            422,
        )["field"]
        == "thresholds.1"
    )
    assert (
        error_of(client.post("/v1/budgets", json={"customer": uid("nobody"), "amount": 5}), 404)[
            "field"
        ]
        == "customer"
    )
    assert (
        error_of(
            client.post(
                "/v1/budgets", json={"customer": customer, "meter": uid("nometer"), "units": 5}
            ),
            404,
        )["field"]
        == "meter"
    )
    assert error_of(client.get(f"/v1/customers/{uid('nobody')}/access"), 404)
    assert error_of(
        client.get(f"/v1/customers/{customer}/access", params={"meter": uid("nometer")}), 404
    )
    assert (
        error_of(
            client.post(
                "/v1/webhook-endpoints", json={"url": "ftp://example.com", "event_types": ["*"]}
            ),
            422,
        )["field"]
        == "url"
    )
    assert (
        error_of(
            client.post(
                "/v1/webhook-endpoints",
                json={"url": "https://example.com", "event_types": ["nope"]},
            ),
            422,
        )["field"]
        == "event_types.0"
    )
    assert error_of(client.get("/v1/webhook-deliveries", params={"endpoint": "we_nope"}), 404)
    money = ok(client.post("/v1/budgets", json={"customer": customer, "amount": "25.50"}), 201)
    assert (money["kind"], money["amount"], money["currency"]) == ("money", "25.50", "USD")
    assert money["measured"] == "0" and "notice" in money
    assert error_of(httpx.get(alerts_server.base_url + f"/v1/customers/{customer}/access"), 401)
