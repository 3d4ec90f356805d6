"""Webhooks through the real brokers, with every worker running as threads: dramatiq's
in-process queue in the embedded mode, Redis in production, and Redis away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from application.settings import Settings
from projections.outbox import webhook_deliveries
from tests.faults.audit_check import assert_audit_passes
from tests.integration.alerts_support import receiver, wait_until
from tests.integration.helpers import ingest, item
from workers.runtime import Runtime

pytestmark = pytest.mark.slow
METER = {"key": "tokens", "event_type": "llm", "aggregation": "SUM", "value_property": "tokens"}
CLOSED_PORT = "redis://127.0.0.1:6390/0"


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are removed afterwards."""
    name = f"xtopay-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _runtime(database_url: str, redis_url: str | None, namespace: str = "xtopay") -> Runtime:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_namespace=namespace,
        webhook_retry_base_seconds=0.2,
    )
    return Runtime(settings)


def _prepare(rt: Runtime, url: str):
    """A tenant, a customer, a meter, a blocking budget and an endpoint for every type."""
    tenant = rt.catalog.create_tenant("acme").tenant_id
    rt.catalog.create_customer(tenant, {"external_id": "c1"})
    rt.catalog.create_meter(tenant, METER)
    rt.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "meter": "tokens", "units": 100, "block_at": 100}
    )
    endpoint, _ = rt.alerts.webhooks.register_endpoint(tenant, {"url": url, "event_types": ["*"]})
    return tenant, endpoint


def _blocked(rt: Runtime, tenant) -> bool:
    return bool(asyncio.run(rt.alerts.access.reasons(tenant.hex, "c1", "tokens")))


def _statuses(rt: Runtime) -> list[tuple[str, int]]:
    with rt.read_engine.connect() as conn:
        t = webhook_deliveries
        return [tuple(r) for r in conn.execute(sa.select(t.c.status, t.c.attempts))]


def _deliver_and_check(rt: Runtime, hook, endpoint) -> None:
    tenant = uuid.UUID(endpoint.tenant_id)
    ingest(rt, tenant, [item("e1", event_type="llm", properties={"tokens": 150})])
    assert wait_until(lambda: _blocked(rt, tenant), timeout=5)
    # 2 crossings + 1 block; the first answer of the receiver is a 500
    assert wait_until(
        lambda: (
            len({r.headers["webhook-id"] for r in hook.requests}) == 3 and len(hook.requests) == 4
        ),
        timeout=15,
    ), hook.requests
    ids = [r.headers["webhook-id"] for r in hook.requests]
    assert ids[0] in ids[1:]  # the failed one came back with the same id
    types = set()
    for request in hook.requests:
        types.add(Webhook(endpoint.secret).verify(request.body, request.headers)["type"])
    assert types == {"budget.threshold_crossed", "access.blocked"}
    expected = sorted([("delivered", 1)] * 2 + [("delivered", 2)])
    assert wait_until(lambda: sorted(_statuses(rt)) == expected), _statuses(rt)


def test_embedded_mode_runs_the_actor_on_an_in_process_queue(sqlite_url: str) -> None:
    rt = _runtime(sqlite_url, None)
    try:
        with receiver(codes=[500]) as hook:
            _, endpoint = _prepare(rt, hook.url)
            rt.start_workers()
            _deliver_and_check(rt, hook, endpoint)
    finally:
        rt.close()


@pytest.mark.redis
def test_production_mode_delivers_through_redis(
    pg_url: str, redis_url: str, namespace: str
) -> None:
    rt = _runtime(pg_url, redis_url, namespace)
    try:
        with receiver(codes=[500]) as hook:
            tenant, endpoint = _prepare(rt, hook.url)
            rt.start_workers()
            _deliver_and_check(rt, hook, endpoint)
        client = redis.Redis.from_url(redis_url)
        cached = client.hgetall(f"{namespace}:access:{tenant.hex}:c1")
        assert list(cached) == [b"tokens"] and b"budget_exceeded" in cached[b"tokens"]
        assert any(k.startswith(f"{namespace}:dramatiq".encode()) for k in client.keys("*"))
        client.close()
    finally:
        rt.close()


@pytest.mark.redis
def test_with_redis_away_ingestion_and_queries_work_and_messages_wait(
    pg_url: str, redis_url: str, namespace: str
) -> None:
    rt = _runtime(pg_url, CLOSED_PORT, namespace)
    with receiver() as hook:
        try:
            tenant, endpoint = _prepare(rt, hook.url)
            rt.start_workers()
            outcome = ingest(rt, tenant, [item("e1", event_type="llm", properties={"tokens": 150})])
            assert outcome[0].status == "accepted"
            # the access check answers from the table while Redis is away
            assert wait_until(lambda: _blocked(rt, tenant), timeout=5)
            assert wait_until(lambda: len(_statuses(rt)) == 3, timeout=5)
            started = datetime.now(UTC)
            while (datetime.now(UTC) - started).total_seconds() < 1.0:
                assert _statuses(rt) == [("pending", 0)] * 3
            assert hook.requests == []
        finally:
            rt.close()
        rt = _runtime(pg_url, redis_url, namespace)  # Redis configured and reachable
        try:
            rt.start_workers()
            assert wait_until(lambda: _statuses(rt) == [("delivered", 1)] * 3, timeout=15)
            assert len(hook.requests) == 3
            for request in hook.requests:
                Webhook(endpoint.secret).verify(request.body, request.headers)
            assert wait_until(lambda: _blocked(rt, tenant), timeout=5)
        finally:
            rt.close()
    assert_audit_passes(pg_url)
