"""Budget commands: set a budget, and record what a new measurement decides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.catalog import Catalog
from application.store import Ledger
from domain.budgets import MONEY, USAGE_CORRECTED, Budget, Decision, budget_id_for, parse_budget
from domain.errors import Conflict, InvalidInput, NotFound

SAVE_ATTEMPTS = 3


@dataclass(frozen=True)
class BudgetSet:
    """The outcome of setting a budget: the budget, whether it is new, and the
    position of its last event (None when nothing changed)."""

    budget: Budget
    created: bool
    position: int | None


class Budgets:
    """Commands over budgets. Measuring is not done here: the budget processor
    measures from the read models and hands the value to `record_measurement`."""

    def __init__(self, ledger: Ledger, catalog: Catalog) -> None:
        self.ledger = ledger
        self.catalog = catalog

    def set_budget(self, tenant_id: UUID, data: dict[str, Any]) -> BudgetSet:
        """Create the customer's budget for a meter (or for money), or replace its
        limit and rules; thresholds crossed this period stay crossed."""
        customer = data.get("customer")
        if not isinstance(customer, str) or not customer:
            raise InvalidInput("customer is required", "customer")
        spec = parse_budget(data)
        try:
            account = self.catalog.get_customer(tenant_id, customer)
        except NotFound:
            raise NotFound(f"no customer {customer!r}", "customer") from None
        if spec.meter is not None:
            try:
                self.catalog.meter(tenant_id, spec.meter)
            except NotFound:
                raise NotFound(f"no meter {spec.meter!r}", "meter") from None
        currency = account.currency if spec.kind == MONEY else None
        budget_id = budget_id_for(tenant_id, customer, spec.meter)
        try:
            budget: Budget = self.ledger.repository.get(budget_id)
            created = False
        except AggregateNotFoundError:
            budget = Budget(
                tenant_id=tenant_id.hex,
                customer=customer,
                kind=spec.kind,
                meter=spec.meter,
                limit=spec.limit,
                currency=currency,
                thresholds=list(spec.thresholds),
                block_at=spec.block_at,
            )
            created = True
        if not created:
            unchanged = (
                budget.limit == spec.limit
                and budget.thresholds == list(spec.thresholds)
                and budget.block_at == spec.block_at
                and budget.currency == currency
            )
            if unchanged:
                return BudgetSet(budget, False, None)
            budget.change(
                limit=spec.limit,
                currency=currency,
                thresholds=list(spec.thresholds),
                block_at=spec.block_at,
            )
        try:
            recordings = self.ledger.save(budget)
        except IntegrityError:
            raise Conflict("the budget was changed concurrently; retry") from None
        return BudgetSet(budget, created, recordings[-1].notification.id if recordings else None)

    def get(self, budget_id: UUID) -> Budget:
        try:
            return self.ledger.repository.get(budget_id)
        except AggregateNotFoundError:
            raise NotFound("no such budget", "budget") from None

    def record_measurement(
        self,
        budget_id: UUID,
        period_start: datetime,
        period_end: datetime,
        measured: Decimal,
        restore_reason: str = USAGE_CORRECTED,
    ) -> Decision:
        """Decide on the budget's own recorded state what `measured` means for the
        period, and record it. Idempotent: thresholds already crossed in the period
        are not recorded again, so a processor that crashed after saving and replays
        its batch records nothing twice; two processors racing on one budget meet
        the store's version check, and the loser decides again on the new state."""
        for _ in range(SAVE_ATTEMPTS):
            budget = self.get(budget_id)
            decision = budget.decide(period_start, measured, restore_reason)
            if decision.empty:
                return decision
            budget.apply(decision, period_start, period_end, measured)
            try:
                self.ledger.save(budget)
            except IntegrityError:
                continue
            return decision
        raise Conflict(f"budget {budget_id} kept changing while being recorded")
