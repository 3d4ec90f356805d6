"""Billing facts become webhooks: invoice.finalized and usage.late_event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from projections.outbox import webhook_messages
from tests.integration.billing_helpers import bill, send, setup, subscribe
from workers.runtime import Runtime


def test_invoice_finalized_and_late_usage_are_sent_to_endpoints(runtime: Runtime) -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    tenant = setup(runtime, interval="week")
    subscribe(runtime, tenant, start)
    runtime.alerts.webhooks.register_endpoint(
        tenant,
        {
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["invoice.finalized", "usage.late_event"],
        },
    )
    send(runtime, tenant, start + timedelta(days=1), start + timedelta(days=1), "on-time")
    bill(runtime, start + timedelta(days=7, hours=2))
    late = start + timedelta(days=8)
    send(runtime, tenant, start + timedelta(days=2), late, "late")  # for the closed week
    bill(runtime, late + timedelta(minutes=1))
    runtime.alerts.outbox_runner.catch_up()
    with runtime.read_engine.connect() as conn:
        rows = conn.execute(
            sa.select(webhook_messages.c.event_type, webhook_messages.c.payload).order_by(
                webhook_messages.c.position
            )
        ).all()
    bodies = [json.loads(r.payload) for r in rows]
    assert [b["type"] for b in bodies] == ["invoice.finalized", "usage.late_event"]
    assert bodies[0]["data"]["total"] == "1.00" and bodies[0]["data"]["customer"] == "c1"
    assert bodies[1]["data"]["policy"] == "next_period"
    assert len(bodies[1]["data"]["events"]) == 1
