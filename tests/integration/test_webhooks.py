"""The webhook outbox and delivery over real stores, driven step by step: one message
per event and endpoint, Standard Webhooks signatures verified by the `standardwebhooks`
library, retries with the same id, and an endpoint disabled after three failing days."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from domain.budgets import Budget
from domain.webhooks import WebhookEndpoint
from projections.outbox import message_id_for, webhook_deliveries, webhook_messages
from tests.integration.alerts_support import events_of, receiver, settle
from tests.integration.helpers import ingest, item
from workers.runtime import Runtime
from workers.webhooks import Dispatcher

METER = {"key": "tokens", "event_type": "llm", "aggregation": "SUM", "value_property": "tokens"}


def _tenant(rt: Runtime, name: str = "acme"):
    tenant = rt.catalog.create_tenant(name).tenant_id
    rt.catalog.create_customer(tenant, {"external_id": "c1"})
    rt.catalog.create_meter(tenant, METER)
    return tenant


def _endpoint(rt: Runtime, tenant, url: str, types: list[str]) -> WebhookEndpoint:
    endpoint, _ = rt.alerts.webhooks.register_endpoint(tenant, {"url": url, "event_types": types})
    return endpoint


def _block(rt: Runtime, tenant, key: str = "e1") -> None:
    """Set a 100-unit budget blocking at 100 % and use 150 units: three events."""
    rt.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "meter": "tokens", "units": 100, "block_at": 100}
    )
    ingest(rt, tenant, [item(key, event_type="llm", properties={"tokens": 150})])
    settle(rt)


def _messages(rt: Runtime) -> list[sa.Row]:
    with rt.read_engine.connect() as conn:
        return conn.execute(sa.select(webhook_messages).order_by(webhook_messages.c.position)).all()


def _delivery(rt: Runtime, message_id: str) -> sa.Row:
    with rt.read_engine.connect() as conn:
        t = webhook_deliveries
        return conn.execute(sa.select(t).where(t.c.message_id == message_id)).one()


def test_one_signed_message_per_event_and_subscribed_endpoint(runtime: Runtime) -> None:
    tenant = _tenant(runtime)
    other = _tenant(runtime, "other")
    with receiver() as hook:
        alerts = _endpoint(
            runtime, tenant, hook.url, ["budget.threshold_crossed", "access.blocked"]
        )
        everything = _endpoint(runtime, tenant, hook.url + "/all", ["*"])
        _endpoint(runtime, tenant, hook.url + "/restored", ["access.restored"])
        _endpoint(runtime, other, hook.url + "/other", ["*"])
        _block(runtime, tenant)
        events = events_of(runtime, Budget.ThresholdCrossed) + events_of(
            runtime, Budget.AccessBlocked
        )
        assert len(events) == 3
        messages = _messages(runtime)
        assert sorted((m.endpoint_id, m.event_type) for m in messages) == sorted(
            (e.id.hex, kind)
            for e in (alerts, everything)
            for kind in ("budget.threshold_crossed",) * 2 + ("access.blocked",)
        )
        expected_ids = {
            message_id_for(e.id.hex, ev.originator_id.hex, ev.originator_version)
            for e in (alerts, everything)
            for ev in events
        }
        assert {m.message_id for m in messages} == expected_ids

        for m in messages:
            assert runtime.alerts.deliverer.deliver(m.message_id) == "delivered"
            assert runtime.alerts.deliverer.deliver(m.message_id) == "delivered"  # idempotent
        assert len(hook.requests) == 6
        secrets = {alerts.id.hex: alerts.secret, everything.id.hex: everything.secret}
        for request, m in zip(hook.requests, messages, strict=True):
            assert request.headers["webhook-id"] == m.message_id
            payload = Webhook(secrets[m.endpoint_id]).verify(request.body, request.headers)
            assert set(payload) == {"type", "timestamp", "data"}
            assert payload["type"] == m.event_type
            assert payload["data"]["customer"] == "c1" and payload["data"]["meter"] == "tokens"
        blocked = json.loads(next(m.payload for m in messages if m.event_type == "access.blocked"))
        assert blocked["data"]["reason"] == "budget_exceeded"
        assert (blocked["data"]["measured"], blocked["data"]["limit"]) == ("150", "100")
        assert _delivery(runtime, messages[0].message_id).status == "delivered"


def test_5xx_answers_are_retried_with_the_same_id(runtime: Runtime) -> None:
    tenant = _tenant(runtime)
    runtime.alerts.deliverer.base_seconds = 0.2
    with receiver(codes=[500, 503]) as hook:
        endpoint = _endpoint(runtime, tenant, hook.url, ["access.blocked"])
        _block(runtime, tenant)
        [message] = _messages(runtime)
        dispatcher = Dispatcher(
            runtime.engine, runtime.read_engine, runtime.alerts.deliverer.deliver
        )
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while _delivery(runtime, message.message_id).status == "pending":
            assert datetime.now(UTC) < deadline
            dispatcher.run_once()
        assert [r.headers["webhook-id"] for r in hook.requests] == [message.message_id] * 3
        for request in hook.requests:
            Webhook(endpoint.secret).verify(request.body, request.headers)
        assert len({r.body for r in hook.requests}) == 1
        gaps = [b.at - a.at for a, b in zip(hook.requests, hook.requests[1:], strict=False)]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # base x 2^(n-1)
    with runtime.read_engine.connect() as conn:
        attempts = conn.exec_driver_sql(
            "SELECT attempt, status_code, error, next_retry_us FROM webhook_attempts "
            "ORDER BY attempt"
        ).all()
    assert [(a[0], a[1]) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    assert attempts[0][2] == "HTTP 500" and attempts[2][3] is None
    assert attempts[0][3] is not None and attempts[1][3] is not None


def test_an_endpoint_failing_for_three_days_is_disabled(runtime: Runtime) -> None:
    tenant = _tenant(runtime)
    start = datetime.now(UTC)
    clock = [start]
    deliverer = runtime.alerts.deliverer
    deliverer.clock = lambda: clock[0]
    with receiver(codes=[500] * 10) as hook:
        endpoint = _endpoint(runtime, tenant, hook.url, ["*"])
        _block(runtime, tenant)
        first = _messages(runtime)[0].message_id
        for days in (0, 1, 2):
            clock[0] = start + timedelta(days=days)
            assert deliverer.deliver(first) == "pending"
        clock[0] = start + timedelta(days=3, seconds=1)
        assert deliverer.deliver(first) == "cancelled"
        assert len(hook.requests) == 4
    [disabled] = events_of(runtime, WebhookEndpoint.Disabled)
    assert disabled.originator_id == endpoint.id and disabled.failing_since == start
    settle(runtime)
    statuses = {m.message_id: _delivery(runtime, m.message_id).status for m in _messages(runtime)}
    assert statuses.pop(first) == "failed"
    assert set(statuses.values()) == {"cancelled"}
    with runtime.read_engine.connect() as conn:
        status = conn.exec_driver_sql("SELECT status FROM webhook_endpoints").scalar()
    assert status == "disabled"
    count = len(_messages(runtime))
    runtime.alerts.budgets.set_budget(tenant, {"customer": "c1", "meter": "tokens", "units": 500})
    settle(runtime)  # restores access: an event, but no message for a disabled endpoint
    assert events_of(runtime, Budget.AccessRestored)
    assert len(_messages(runtime)) == count


def test_nothing_is_sent_for_an_uncommitted_change(runtime: Runtime) -> None:
    tenant = _tenant(runtime)
    _endpoint(runtime, tenant, "http://127.0.0.1:9/never", ["*"])
    runtime.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "meter": "tokens", "units": 10, "block_at": 100}
    )
    settle(runtime)
    budget = runtime.alerts.budgets.get(
        runtime.alerts.budgets.set_budget(
            tenant, {"customer": "c1", "meter": "tokens", "units": 10, "block_at": 100}
        ).budget.id
    )
    now = datetime.now(UTC)
    decision = budget.decide(now, budget.limit * 2)
    budget.apply(decision, now, now + timedelta(days=30), budget.limit * 2)  # never saved
    settle(runtime)
    assert _messages(runtime) == []
