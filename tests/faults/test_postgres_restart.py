"""PostgreSQL restarted during ingestion: 503 with Retry-After while it is down, no
acknowledged event lost, and the server recovers by itself.

The test runs its own PostgreSQL cluster on a free port, so stopping it disturbs
nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from application.settings import Settings
from tests.e2e.support import ServerProcess, free_port
from tests.faults.audit_check import assert_audit_passes
from workers.runtime import Runtime

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"PostgreSQL binaries not found ({name})")
    return found[-1]


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


class Cluster:
    """A throw-away PostgreSQL cluster owned by the test."""

    def __init__(self, root: Path) -> None:
        self.data = root / "pgdata"
        self.port = free_port()
        self.log = root / "pg.log"

    def init(self) -> None:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data.parent, "postgres")
        subprocess.run(
            _as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                _pg_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1",
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="xtopay-pg-"))
    os.chmod(root, 0o755)
    pg = Cluster(root)
    try:
        pg.init()
        pg.start()
        yield pg
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_restart_answers_503_and_loses_no_acknowledged_event(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = ServerProcess(cluster.url, tmp_path).start()
    headers = {"Authorization": f"Bearer {server.key}"}
    acked: dict[str, str] = {}
    statuses: list[tuple[int, str | None]] = []
    stop = threading.Event()
    at = datetime.now(UTC) - timedelta(minutes=10)

    def send() -> None:
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
            number = 0
            while not stop.is_set():
                key = f"k{number}"
                body = {
                    "idempotency_key": key,
                    "event_type": "api",
                    "customer": "c1",
                    "timestamp": (at + timedelta(microseconds=number)).isoformat(),
                }
                reply = client.post("/v1/usage-events", json=body)
                statuses.append((reply.status_code, reply.headers.get("retry-after")))
                if reply.status_code == 200:
                    acked[key] = reply.json()["id"]
                    number += 1
                else:
                    time.sleep(0.05)  # a client honouring Retry-After would wait longer

    sender = threading.Thread(target=send)
    sender.start()
    try:
        _wait_for(lambda: len(acked) >= 50, 30)
        cluster.stop()
        _wait_for(lambda: any(s == 503 for s, _ in statuses), 30)
        time.sleep(2)
        cluster.start()
        count_at_restart = len(acked)
        _wait_for(lambda: len(acked) >= count_at_restart + 50, 60)
    finally:
        stop.set()
        sender.join(30)
        server.stop()

    unavailable = [(s, r) for s, r in statuses if s != 200]
    assert unavailable, "the outage must have been noticed"
    assert {s for s, _ in unavailable} == {503}, unavailable[:5]
    assert all(r is not None and int(r) >= 1 for _, r in unavailable)
    rt = Runtime(Settings(database_url=cluster.url))
    try:
        stored = {
            n.originator_id.hex
            for n in rt.ledger.recorder.select_notifications(start=None, limit=10**6)
            if n.topic.endswith("UsageEvent.Recorded")
        }
    finally:
        rt.close()
    missing = [k for k, event_id in acked.items() if event_id.removeprefix("evt_") not in stored]
    assert missing == []
    assert_audit_passes(cluster.url)


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
