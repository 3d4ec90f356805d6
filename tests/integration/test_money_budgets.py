"""Money budgets measure the same running charges wallets are drawn down by."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.budgets import Budget
from tests.integration.alerts_support import access, events_of, settle
from tests.integration.billing_helpers import send_many, setup, subscribe
from tests.integration.helpers import item
from workers.runtime import Runtime

D = Decimal


def test_money_budget_warns_at_80_and_blocks_at_100_percent_of_charges(runtime: Runtime) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    tenant = setup(
        runtime,
        interval="month",  # 0.50 per call
        prices=[{"meter": "calls", "model": "per_unit", "unit_price": "0.50"}],
    )
    subscribe(runtime, tenant, now - timedelta(days=1))
    runtime.alerts.budgets.set_budget(
        tenant, {"customer": "c1", "amount": "10", "thresholds": [80, 100], "block_at": 100}
    )

    def spend(calls: int, prefix: str) -> None:
        send_many(
            runtime,
            tenant,
            [
                item(f"{prefix}{i}", event_type="api", timestamp=now - timedelta(seconds=i))
                for i in range(calls)
            ],
            now,
        )
        runtime.usage.catch_up()
        runtime.invoices.catch_up()
        runtime.drawdown.step(now)
        settle(runtime, now)

    spend(15, "a")  # 7.50: 75 %
    assert events_of(runtime, Budget.ThresholdCrossed) == []
    spend(2, "b")  # 8.50: 85 %
    assert [e.threshold for e in events_of(runtime, Budget.ThresholdCrossed)] == [80]
    assert access(runtime, tenant, "c1") == []
    spend(4, "c")  # 10.50: over 100 %, blocked
    crossed = events_of(runtime, Budget.ThresholdCrossed)
    assert [e.threshold for e in crossed] == [80, 100]
    assert D(crossed[-1].measured) == D("10.50")
    reasons = access(runtime, tenant, "c1")
    assert reasons and reasons[0]["type"] == "budget_exceeded"
    assert len(events_of(runtime, Budget.AccessBlocked)) == 1
