"""Drive the application directly (no HTTP) in integration tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from application.ingest import Outcome
from workers.runtime import Runtime


def item(key: str | None, customer: str = "c1", **fields: Any) -> dict[str, Any]:
    """A usage event in the ingestor's input shape."""
    base: dict[str, Any] = {
        "idempotency_key": key, "customer": customer, "event_type": None, "meter": None,
        "value": None, "timestamp": None, "properties": None, "metadata": None,
    }
    base.update(fields)
    return base


def ingest(rt: Runtime, tenant: UUID, items: list[dict[str, Any]],
           now: datetime | None = None) -> list[Outcome]:
    """Validate and store events exactly as the batch endpoint does."""
    now = now or datetime.now(UTC)
    outcomes = rt.ingestor.prepare(tenant, list(enumerate(items)), now, "events.{index}.")
    asyncio.run(rt.ingestor.record(tenant, outcomes, now))
    return outcomes


def project(rt: Runtime) -> int:
    """Apply everything in the log to the read models (answers the usage count)."""
    count = rt.usage.catch_up()
    for runner in (rt.alerts.access_runner, rt.alerts.outbox_runner):
        runner.catch_up()
    return count
