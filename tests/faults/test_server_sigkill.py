"""SIGKILL the server during batch ingestion; the client resends the same keys.

Every event ends up stored exactly once, every event the server acknowledged
before dying is still there, and the audit finds the read models consistent.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from application.settings import Settings
from tests.e2e.support import ServerProcess
from tests.faults.audit_check import assert_audit_passes
from workers.runtime import Runtime

pytestmark = pytest.mark.slow
BATCHES, SIZE = 16, 1000


AT = datetime.now(UTC) - timedelta(hours=1)  # fixed: a resend must be the same payload


def _batch(number: int) -> dict:
    at = AT
    return {
        "events": [
            {
                "idempotency_key": f"b{number}-{i}",
                "event_type": "llm",
                "customer": f"c{i % 13}",
                "timestamp": (at - timedelta(microseconds=number * SIZE + i)).isoformat(),
                "properties": {"tokens": i % 101},
            }
            for i in range(SIZE)
        ]
    }


def _send_all(
    base_url: str,
    key: str,
    acked: dict[str, str],
    stop: threading.Event,
    numbers: range = range(BATCHES),
) -> None:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        for number in numbers:
            if stop.is_set():
                return
            try:
                reply = client.post("/v1/usage-events/batch", json=_batch(number))
            except httpx.TransportError:
                return  # the server died under us: this batch is unacknowledged
            assert reply.status_code == 200, reply.text
            for result in reply.json()["results"]:
                assert result["status"] in ("accepted", "duplicate"), result
                acked[f"b{number}-{result['index']}"] = result["id"]


def test_sigkill_mid_batch_then_resend_stores_each_event_once(
    database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(database_url, tmp_path).start()
    key = server.key
    assert key is not None
    httpx.post(
        f"{server.base_url}/v1/meters",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "key": "tokens",
            "event_type": "llm",
            "aggregation": "SUM",
            "value_property": "tokens",
        },
        timeout=30,
    ).raise_for_status()
    acked: dict[str, str] = {}
    stop = threading.Event()
    halves = (range(0, BATCHES, 2), range(1, BATCHES, 2))
    senders = [
        threading.Thread(target=_send_all, args=(server.base_url, key, acked, stop, half))
        for half in halves
    ]
    for t in senders:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 2 * SIZE and time.monotonic() < deadline:
        time.sleep(0.01)
    server._kill_group()  # SIGKILL, mid-stream
    stop.set()
    for t in senders:
        t.join(30)
    assert 0 < len(acked) < BATCHES * SIZE, "the kill must land mid-stream"
    acked_before = dict(acked)

    server = ServerProcess(database_url, tmp_path).start(expect_key=False)
    try:
        resent: dict[str, str] = {}
        _send_all(server.base_url, key, resent, threading.Event())
        assert len(resent) == BATCHES * SIZE
        for name, event_id in acked_before.items():
            assert resent[name] == event_id  # acknowledged before the kill: same event

        rt = Runtime(Settings(database_url=database_url))
        try:
            notes = rt.ledger.recorder.select_notifications(start=None, limit=10**6)
            usage = [n for n in notes if n.topic.endswith("UsageEvent.Recorded")]
            assert len(usage) == BATCHES * SIZE
            assert len({n.originator_id for n in usage}) == BATCHES * SIZE
            assert rt.wait_for_usage(rt.ledger.recorder.max_notification_id(), 60)
        finally:
            rt.close()
    finally:
        server.stop()
    assert_audit_passes(database_url)
