"""Ingestion over a real store: dedup by the store itself, conflicts, group commit."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from eventsourcing.persistence import Notification

from application.ingest import encode_recorded
from domain.usage import UsageEvent
from tests.integration.helpers import ingest, item, project
from workers.runtime import Runtime


def test_replayed_key_is_one_event_and_other_payload_conflicts(runtime: Runtime) -> None:
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    first = ingest(runtime, tenant, [item("k1", event_type="api_call")])
    again = ingest(runtime, tenant, [item("k1", event_type="api_call"),
                                      item("k1", event_type="api_call", value=Decimal(2))])
    assert first[0].status == "accepted"
    assert [o.status for o in again] == ["duplicate", "rejected"]
    assert again[0].event_id == first[0].event_id
    assert again[1].error is not None and again[1].error.field == "events.1.idempotency_key"
    stored = _usage_notifications(runtime)
    assert len(stored) == 1


def test_same_key_from_eight_threads_is_stored_once(runtime: Runtime) -> None:
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    barrier = threading.Barrier(8)
    statuses: list[str] = []

    def send() -> None:
        barrier.wait()
        statuses.append(ingest(runtime, tenant, [item("same", event_type="api_call")])[0].status)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 7
    assert len(_usage_notifications(runtime)) == 1


def test_fast_encoding_is_what_the_library_mapper_writes(runtime: Runtime) -> None:
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    now = datetime(2026, 5, 28, 1, 7, 30, 123456, tzinfo=UTC)
    outcome = ingest(runtime, tenant, [item("k", event_type="llm", value=Decimal("0.1"),
                                            timestamp=now - timedelta(hours=1),
                                            properties={"tokens": Decimal("2.5"), "m": "ü"},
                                            metadata={"trace": [1, Decimal("0.5")]})], now=now)[0]
    assert outcome.usage is not None
    stored = encode_recorded(tenant, outcome.usage, now)
    event = runtime.ledger.mapper.to_domain_event(stored)
    assert runtime.ledger.mapper.to_stored_event(event).state == stored.state
    aggregate: UsageEvent = runtime.ledger.repository.get(outcome.event_id)
    assert aggregate.value == Decimal("0.1")
    assert aggregate.occurred_at == now - timedelta(hours=1)
    assert aggregate.properties == {"tokens": Decimal("2.5"), "m": "ü"}


def test_concurrent_requests_share_commits_and_all_land(runtime: Runtime) -> None:
    tenant = runtime.catalog.create_tenant("acme").tenant_id
    runtime.catalog.create_meter(tenant, {"key": "calls", "event_type": "api_call",
                                          "aggregation": "COUNT"})

    async def many() -> None:
        now = datetime.now(UTC)
        batches = [
            runtime.ingestor.prepare(tenant, [(0, item(f"k{n}", event_type="api_call"))], now, "")
            for n in range(300)
        ]
        await asyncio.gather(*(runtime.ingestor.record(tenant, b, now) for b in batches))
        assert all(b[0].status == "accepted" and b[0].position for b in batches)

    asyncio.run(many())
    project(runtime)
    assert len(_usage_notifications(runtime)) == 300


def _usage_notifications(runtime: Runtime) -> list[Notification]:
    notes = runtime.ledger.recorder.select_notifications(start=None, limit=100_000)
    return [n for n in notes if n.topic.endswith("UsageEvent.Recorded")]
