"""SIGKILL a billing run halfway: the rerun issues every missing invoice and no duplicate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from application.settings import Settings
from domain.billing import Invoice
from tests.faults.audit_check import assert_audit_passes
from tests.integration.billing_helpers import DAY, HOUR, WEEK, bill, invoices, send_many, setup
from tests.integration.helpers import item
from workers.runtime import Runtime

pytestmark = pytest.mark.slow
CUSTOMERS = 150
WEEKS = 3
START = datetime(2026, 3, 2, tzinfo=UTC)
AS_OF = START + WEEKS * WEEK + HOUR
ROOT = Path(__file__).resolve().parents[2]
RUN = (
    "import sys; from datetime import datetime; from application.settings import Settings; "
    "from workers.runtime import Runtime; from workers.billing import run_billing; "
    "rt = Runtime(Settings.from_env()); print('started', flush=True); "
    "run_billing(rt, datetime.fromisoformat(sys.argv[1]))"
)
DRAFTED = get_topic(Invoice.Drafted)


def _drafted(rt: Runtime) -> int:
    return len(rt.ledger.recorder.select_notifications(1, 1_000_000, topics=[DRAFTED]))


def test_a_killed_run_resumes_without_a_duplicate_invoice_or_line(database_url: str) -> None:
    rt = Runtime(Settings(database_url=database_url))
    try:
        tenant = setup(rt, customer="c0", base_fee={"amount": "1", "timing": "in_advance"})
        events = []
        for n in range(CUSTOMERS):
            customer = f"c{n}"
            if n:
                rt.catalog.create_customer(tenant, {"external_id": customer})
            rt.billing.create_subscription(
                tenant, {"customer": customer, "plan": "p", "start_at": START}, START
            )
            events += [
                item(
                    f"{customer}-{w}",
                    customer,
                    event_type="api",
                    timestamp=START + w * WEEK + DAY,
                    value=Decimal(1),
                )
                for w in range(WEEKS)
            ]
        send_many(rt, tenant, events, START + WEEKS * WEEK)
        expected = CUSTOMERS * (1 + WEEKS)  # an opening invoice and one per week

        env = {**os.environ, "XTOPAY_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
        worker = subprocess.Popen(
            [sys.executable, "-c", RUN, AS_OF.isoformat()],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while _drafted(rt) < expected // 4:
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed_at = _drafted(rt)
        assert 0 < killed_at < expected, "the kill must land halfway"

        result = bill(rt, AS_OF)
        assert len(result.invoices) == expected - killed_at
        assert bill(rt, AS_OF).invoices == []
        assert _drafted(rt) == expected

        seen: Counter[tuple[str, str, str]] = Counter()
        for n in range(CUSTOMERS):
            found = invoices(rt, tenant, f"c{n}")
            seen.update((i["subscription"], i["kind"], i["period_start"]) for i in found)
            regular = [i for i in found if i["kind"] == "regular"]
            assert len(regular) == WEEKS
            for invoice in regular:
                assert [x["type"] for x in invoice["lines"]] == ["usage", "base_fee"]
                assert invoice["lines"][0]["quantity"] == "1"
                assert len({x["id"] for x in invoice["lines"]}) == 2
        assert sum(seen.values()) == expected and max(seen.values()) == 1
    finally:
        rt.close()
    assert_audit_passes(database_url)
