"""Budgets: a limit per billing period on what one customer consumes, with alert
thresholds and an optional access block.

A budget measures either units of one meter or money (the running charges of the
period). What is measured is decided outside the domain; the rules here are pure:
which thresholds a measured value crosses (every one it reaches, each once per
period), when access is blocked and when it is restored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.catalog import to_decimal
from domain.errors import InvalidInput

UNITS = "units"
MONEY = "money"
KINDS = (UNITS, MONEY)
DEFAULT_THRESHOLDS = (80, 100)
MAX_THRESHOLDS = 10
MAX_PERCENT = 1000

PERIOD_RESET = "period_reset"
BUDGET_CHANGED = "budget_changed"
USAGE_CORRECTED = "usage_corrected"
BUDGET_EXCEEDED = "budget_exceeded"


def budget_id_for(tenant_id: UUID, customer: str, meter: str | None) -> UUID:
    """Deterministic budget id: one budget per (tenant, customer, meter or money).

    The natural key is JSON-encoded so that no customer id or meter key (which may
    hold ':' or be called "money") can collide with another budget's key.
    """
    return uuid5(tenant_id, "budget:" + json.dumps([customer, meter]))


@dataclass(frozen=True)
class BudgetSpec:
    """A validated budget definition: what is measured, the limit, the rules."""

    kind: str
    meter: str | None
    limit: Decimal
    thresholds: tuple[int, ...]
    block_at: int | None


def parse_budget(data: dict[str, Any]) -> BudgetSpec:
    """Validate a budget from its JSON shape: {"customer", "amount"} for money per
    period, or {"customer", "meter", "units"}; "thresholds" (percent, default
    [80, 100]) and "block_at" (percent, default none: alerts only)."""
    meter = data.get("meter")
    has_amount, has_units = data.get("amount") is not None, data.get("units") is not None
    if meter is not None:
        if not isinstance(meter, str) or not meter:
            raise InvalidInput("meter must be a meter key", "meter")
        if has_amount:
            raise InvalidInput("a meter budget takes units, not amount", "amount")
        kind, field = UNITS, "units"
    else:
        if has_units:
            raise InvalidInput("a units budget needs the meter it counts", "meter")
        kind, field = MONEY, "amount"
    limit = to_decimal(data.get(field))
    if limit is None:
        raise InvalidInput(f"{field} is required (a positive number)", field)
    if limit <= 0:
        raise InvalidInput(f"{field} must be greater than zero", field)
    thresholds = _thresholds(data.get("thresholds", list(DEFAULT_THRESHOLDS)))
    block_at = data.get("block_at")
    if block_at is not None:
        block_at = _percent(block_at, "block_at")
    return BudgetSpec(kind, meter, limit, thresholds, block_at)


def _percent(raw: Any, field: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, Decimal, str)):
        raise InvalidInput("a percentage must be a whole number from 1 to 1000", field)
    value = to_decimal(raw)
    if value is None or value != value.to_integral_value() or not 1 <= value <= MAX_PERCENT:
        raise InvalidInput("a percentage must be a whole number from 1 to 1000", field)
    return int(value)


def _thresholds(raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise InvalidInput("thresholds must be a list of percentages", "thresholds")
    if len(raw) > MAX_THRESHOLDS:
        raise InvalidInput(f"at most {MAX_THRESHOLDS} thresholds", "thresholds")
    values = [_percent(item, f"thresholds.{i}") for i, item in enumerate(raw)]
    if len(set(values)) != len(values):
        raise InvalidInput("thresholds must be distinct", "thresholds")
    return tuple(sorted(values))


# The rules


def reached(measured: Decimal, limit: Decimal, percent: int) -> bool:
    """Has `measured` reached `percent` % of `limit`? Exact: no division."""
    return measured * 100 >= limit * percent


def thresholds_crossed(
    thresholds: tuple[int, ...] | list[int],
    already: set[int],
    measured: Decimal,
    limit: Decimal,
) -> tuple[int, ...]:
    """Every threshold `measured` has reached that was not crossed before in the
    period: one step may cross several (a batch that jumps from 50 % to 120 %
    crosses 80 and 100 at once)."""
    return tuple(t for t in sorted(thresholds) if t not in already and reached(measured, limit, t))


@dataclass(frozen=True)
class Decision:
    """What a new measurement means for a budget: thresholds newly crossed, whether
    access is now blocked, and (with its reason) whether it is restored."""

    crossed: tuple[int, ...] = ()
    block: bool = False
    restore: str | None = None

    @property
    def empty(self) -> bool:
        return not self.crossed and not self.block and self.restore is None


def decide(
    *,
    thresholds: tuple[int, ...] | list[int],
    block_at: int | None,
    limit: Decimal,
    blocked: bool,
    crossed: list[int],
    state_period: datetime | None,
    period_start: datetime,
    measured: Decimal,
    restore_reason: str = USAGE_CORRECTED,
) -> Decision:
    """The decision for `measured` in the period starting at `period_start`, given
    the budget's state (`crossed` thresholds belong to `state_period`).

    A later period starts afresh: nothing crossed yet, and a block of an earlier
    period is lifted (`period_reset`). A measurement of a period older than the
    state's is ignored. Within a period, a block is lifted only when the measured
    value falls back below `block_at` (a correction, or a raised limit)."""
    if state_period is not None and period_start < state_period:
        return Decision()
    new_period = state_period is None or period_start > state_period
    hits = thresholds_crossed(thresholds, set() if new_period else set(crossed), measured, limit)
    over = block_at is not None and reached(measured, limit, block_at)
    if blocked:
        if over:  # still over: a new period's block is recorded again, for that period
            return Decision(hits, block=new_period, restore=None)
        return Decision(hits, restore=PERIOD_RESET if new_period else restore_reason)
    return Decision(hits, block=over)


class Budget(Aggregate):
    """A customer's budget for one meter's units, or for money, per billing period.

    Every event after `Set` repeats the tenant, customer and meter, so that each is
    self-describing (a webhook payload is built from the event alone)."""

    @event("Set")
    def __init__(
        self,
        tenant_id: str,
        customer: str,
        kind: str,
        meter: str | None,
        limit: Decimal,
        currency: str | None,
        thresholds: list[int],
        block_at: int | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer = customer
        self.kind = kind
        self.meter = meter
        self.limit = limit
        self.currency = currency
        self.thresholds = list(thresholds)
        self.block_at = block_at
        self.period_start: datetime | None = None
        self.crossed: list[int] = []
        self.blocked = False

    @staticmethod
    def create_id(tenant_id: str, customer: str, meter: str | None, **_: Any) -> UUID:
        return budget_id_for(UUID(tenant_id), customer, meter)

    @event("Changed")
    def change(
        self, limit: Decimal, currency: str | None, thresholds: list[int], block_at: int | None
    ) -> None:
        """The budget was set again: a new limit or new rules, from now on. Thresholds
        already crossed in the current period stay crossed."""
        self.limit = limit
        self.currency = currency
        self.thresholds = list(thresholds)
        self.block_at = block_at

    def _enter(self, period_start: datetime) -> None:
        if self.period_start is None or period_start > self.period_start:
            self.period_start = period_start
            self.crossed = []

    @event("ThresholdCrossed")
    def cross_threshold(
        self,
        tenant_id: str,
        customer: str,
        meter: str | None,
        period_start: datetime,
        period_end: datetime,
        threshold: int,
        measured: Decimal,
        limit: Decimal,
    ) -> None:
        """What the customer consumed in the period reached `threshold` % of the limit
        (recorded once per threshold and period)."""
        self._enter(period_start)
        self.crossed.append(threshold)

    @event("AccessBlocked")
    def block_access(
        self,
        tenant_id: str,
        customer: str,
        meter: str | None,
        period_start: datetime,
        period_end: datetime,
        reason: str,
        threshold: int,
        measured: Decimal,
        limit: Decimal,
    ) -> None:
        """Consumption reached `block_at` %: access checks answer not allowed until the
        period ends or the budget allows more. Usage sent meanwhile is still stored."""
        self._enter(period_start)
        self.blocked = True

    @event("AccessRestored")
    def restore_access(
        self,
        tenant_id: str,
        customer: str,
        meter: str | None,
        period_start: datetime,
        reason: str,
    ) -> None:
        """Access is allowed again: a new period began, the budget changed, or a
        correction brought consumption back under the block."""
        self._enter(period_start)
        self.blocked = False

    def saturated(self, period_start: datetime) -> bool:
        """Every threshold crossed in this period and access already blocked (or never
        to be): while usage only grows, no new measurement can decide anything."""
        return (
            self.period_start == period_start
            and set(self.thresholds) <= set(self.crossed)
            and (self.blocked or self.block_at is None)
        )

    def decide(
        self, period_start: datetime, measured: Decimal, restore_reason: str = USAGE_CORRECTED
    ) -> Decision:
        return decide(
            thresholds=self.thresholds,
            block_at=self.block_at,
            limit=self.limit,
            blocked=self.blocked,
            crossed=self.crossed,
            state_period=self.period_start,
            period_start=period_start,
            measured=measured,
            restore_reason=restore_reason,
        )

    def apply(
        self, decision: Decision, period_start: datetime, period_end: datetime, measured: Decimal
    ) -> None:
        """Record a decision's events: a restore first (it may open the new period),
        then each crossing, then the block."""
        who = {"tenant_id": self.tenant_id, "customer": self.customer, "meter": self.meter}
        if decision.restore is not None:
            self.restore_access(**who, period_start=period_start, reason=decision.restore)
        for threshold in decision.crossed:
            self.cross_threshold(
                **who,
                period_start=period_start,
                period_end=period_end,
                threshold=threshold,
                measured=measured,
                limit=self.limit,
            )
        if decision.block:
            assert self.block_at is not None
            self.block_access(
                **who,
                period_start=period_start,
                period_end=period_end,
                reason=BUDGET_EXCEEDED,
                threshold=self.block_at,
                measured=measured,
                limit=self.limit,
            )
