"""Budget rules: thresholds crossed once per period, blocking, restoring, validation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from domain.budgets import (
    BUDGET_CHANGED,
    MONEY,
    PERIOD_RESET,
    UNITS,
    Budget,
    Decision,
    budget_id_for,
    decide,
    parse_budget,
    reached,
    thresholds_crossed,
)
from domain.errors import InvalidInput

MAY = datetime(2026, 5, 1, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
JULY = datetime(2026, 7, 1, tzinfo=UTC)
D = Decimal


def budget(block_at: int | None = 100, thresholds: tuple[int, ...] = (80, 100)) -> Budget:
    return Budget(
        tenant_id=uuid4().hex,
        customer="c1",
        kind=UNITS,
        meter="tokens",
        limit=D(1000),
        currency=None,
        thresholds=list(thresholds),
        block_at=block_at,
    )


def measure(b: Budget, period: datetime, end: datetime, value: int) -> Decision:
    """Decide on the aggregate and record, as the processor does."""
    decision = b.decide(period, D(value))
    if not decision.empty:
        b.apply(decision, period, end, D(value))
    return decision


def test_one_step_over_several_thresholds_crosses_them_all() -> None:
    assert thresholds_crossed((80, 100), set(), D(1200), D(1000)) == (80, 100)
    assert thresholds_crossed((100, 80), set(), D(800), D(1000)) == (80,)
    assert thresholds_crossed((80, 100), {80}, D(1000), D(1000)) == (100,)
    assert thresholds_crossed((80, 100), set(), D("799.999"), D(1000)) == ()


def test_reaching_is_exact_at_the_boundary() -> None:
    assert reached(D("0.8"), D(1), 80)
    assert not reached(D("0.7999999999"), D(1), 80)
    assert reached(D(3), D(3), 100)


def test_each_threshold_is_recorded_once_per_period() -> None:
    b = budget(block_at=None)
    assert measure(b, MAY, JUNE, 1500).crossed == (80, 100)
    assert measure(b, MAY, JUNE, 1600).empty
    assert measure(b, MAY, JUNE, 2000).empty
    crossings = [e for e in b.collect_events() if isinstance(e, Budget.ThresholdCrossed)]
    assert [(e.threshold, e.period_start) for e in crossings] == [(80, MAY), (100, MAY)]


def test_a_new_period_starts_afresh() -> None:
    b = budget(block_at=None)
    measure(b, MAY, JUNE, 900)
    assert measure(b, JUNE, JULY, 100).empty
    assert measure(b, JUNE, JULY, 850).crossed == (80,)
    assert b.crossed == [80] and b.period_start == JUNE


def test_block_at_blocks_and_the_next_period_restores() -> None:
    b = budget(block_at=100)
    first = measure(b, MAY, JUNE, 1000)
    assert first == Decision(crossed=(80, 100), block=True)
    assert b.blocked
    assert measure(b, MAY, JUNE, 5000).empty  # blocked once, usage keeps coming
    reset = measure(b, JUNE, JULY, 0)
    assert reset == Decision(restore=PERIOD_RESET)
    assert not b.blocked and b.crossed == [] and b.period_start == JUNE
    kinds = [type(e).__name__ for e in b.collect_events()]
    assert kinds == [
        "Set",
        "ThresholdCrossed",
        "ThresholdCrossed",
        "AccessBlocked",
        "AccessRestored",
    ]


def test_block_at_below_the_limit() -> None:
    b = budget(block_at=90)
    assert measure(b, MAY, JUNE, 850) == Decision(crossed=(80,))
    assert measure(b, MAY, JUNE, 900) == Decision(block=True)


def test_still_over_in_a_new_period_blocks_again_for_that_period() -> None:
    decision = decide(
        thresholds=[80, 100],
        block_at=100,
        limit=D(10),
        blocked=True,
        crossed=[80, 100],
        state_period=MAY,
        period_start=JUNE,
        measured=D(12),
    )
    assert decision == Decision(crossed=(80, 100), block=True)


def test_raising_the_limit_restores_within_the_period() -> None:
    b = budget(block_at=100)
    measure(b, MAY, JUNE, 1000)
    b.change(limit=D(2000), currency=None, thresholds=[80, 100], block_at=100)
    decision = b.decide(MAY, D(1000), restore_reason=BUDGET_CHANGED)
    assert decision == Decision(restore=BUDGET_CHANGED)
    b.apply(decision, MAY, JUNE, D(1000))
    assert not b.blocked and b.crossed == [80, 100]  # crossings stay recorded this period


def test_a_measurement_of_an_older_period_is_ignored() -> None:
    b = budget()
    measure(b, JUNE, JULY, 10)
    measure(b, JUNE, JULY, 900)
    assert measure(b, MAY, JUNE, 5000).empty


def test_saturated_once_everything_has_happened() -> None:
    b = budget(block_at=100)
    measure(b, MAY, JUNE, 900)
    assert not b.saturated(MAY)
    measure(b, MAY, JUNE, 1000)
    assert b.saturated(MAY)
    assert not b.saturated(JUNE)


def test_parse_units_and_money_budgets() -> None:
    units = parse_budget({"customer": "c1", "meter": "tokens", "units": 1000})
    assert (units.kind, units.meter, units.limit) == (UNITS, "tokens", D(1000))
    assert units.thresholds == (80, 100) and units.block_at is None
    money = parse_budget({"amount": "50.00", "thresholds": [100, 50, 75], "block_at": 120})
    assert (money.kind, money.meter, money.limit) == (MONEY, None, D("50.00"))
    assert money.thresholds == (50, 75, 100) and money.block_at == 120


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"meter": "tokens"}, "units"),
        ({"meter": "tokens", "units": 0}, "units"),
        ({"meter": "tokens", "units": "abc"}, "units"),
        ({"units": 10}, "meter"),
        ({"meter": "tokens", "units": 5, "amount": 5}, "amount"),
        ({}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": 5, "thresholds": "80"}, "thresholds"),
        ({"amount": 5, "thresholds": [80, 80]}, "thresholds"),
        ({"amount": 5, "thresholds": [80, 0]}, "thresholds.1"),
        ({"amount": 5, "thresholds": [80.5]}, "thresholds.0"),
        ({"amount": 5, "thresholds": [True]}, "thresholds.0"),
        ({"amount": 5, "block_at": 1001}, "block_at"),
        ({"amount": 5, "meter": ""}, "meter"),
    ],
)
def test_parse_rejects_with_the_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_budget(body)
    assert caught.value.field == field


def test_budget_ids_are_deterministic_and_unambiguous() -> None:
    tenant = uuid4()
    assert budget_id_for(tenant, "c1", "tokens") == budget_id_for(tenant, "c1", "tokens")
    assert budget_id_for(tenant, "c1", None) != budget_id_for(tenant, "c1", "money")
    assert budget_id_for(tenant, "a:b", "c") != budget_id_for(tenant, "a", "b:c")
    assert budget_id_for(tenant, "c1", None) != budget_id_for(uuid4(), "c1", None)
    b = budget()
    assert b.id == budget_id_for(UUID(b.tenant_id), "c1", "tokens")
