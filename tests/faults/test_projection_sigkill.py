"""SIGKILL the projection worker mid-stream: after a restart every event counts once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from application.settings import Settings
from projections.tables import meter_facts, usage_events
from projections.usage_view import meter_row, meter_total
from tests.faults.audit_check import assert_audit_passes
from tests.integration.helpers import ingest, item
from workers.runtime import Runtime

pytestmark = pytest.mark.slow
EVENTS = 40_000


def _start_worker(url: str, batch: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "XTOPAY_DATABASE_URL": url, "XTOPAY_PROJECTION_BATCH_SIZE": str(batch)}
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkilled_worker_resumes_without_loss_or_double_count(database_url: str) -> None:
    rt = Runtime(Settings(database_url=database_url))
    try:
        tenant = rt.catalog.create_tenant("acme").tenant_id
        rt.catalog.create_meter(
            tenant,
            {
                "key": "tokens",
                "event_type": "llm",
                "aggregation": "SUM",
                "value_property": "tokens",
            },
        )
        now = datetime.now(UTC)
        expected: dict[str, Decimal] = {}
        for start in range(0, EVENTS, 1000):
            batch = []
            for i in range(start, start + 1000):
                customer, tokens = f"c{i % 17}", Decimal(i % 97) / 4
                expected[customer] = expected.get(customer, Decimal(0)) + tokens
                batch.append(
                    item(
                        f"k{i}",
                        customer,
                        event_type="llm",
                        timestamp=now - timedelta(seconds=i),
                        properties={"tokens": tokens},
                    )
                )
            ingest(rt, tenant, batch, now=now)
        last = rt.ledger.recorder.max_notification_id()

        worker = _start_worker(database_url, batch=500)
        _wait(lambda: rt.usage.position() > last // 5, 120)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed_at = rt.usage.position()
        assert 0 < killed_at < last, "the kill must land mid-stream"

        worker = _start_worker(database_url, batch=500)
        try:
            _wait(lambda: rt.usage.position() == last, 300)
        finally:
            worker.terminate()
            worker.wait(10)

        with rt.read_engine.connect() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(usage_events)).scalar()
                == EVENTS
            )
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(meter_facts)).scalar() == EVENTS
            )
            meter = meter_row(conn, tenant.hex, "tokens")
            start, end = now - timedelta(days=1), now + timedelta(seconds=1)
            for customer, total in expected.items():
                assert meter_total(conn, meter, customer, start, end) == total
    finally:
        rt.close()
    assert_audit_passes(database_url)
