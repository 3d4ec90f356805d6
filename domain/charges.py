"""Running charges: what a customer's usage has cost so far in its open billing period.

One aggregate per (customer, period), so charges are batched per customer and period:
a busy customer adds one event per processor batch, not one per usage event. Wallets
are debited by these charges; money budgets measure them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

ZERO = Decimal(0)


def period_charges_id_for(tenant_id: UUID, customer: str, period_start_us: int) -> UUID:
    return uuid5(tenant_id, f"charges:{customer}:{period_start_us}")


class PeriodCharges(Aggregate):
    """The running charge of one customer's usage in one billing period."""

    @event("Opened")
    def __init__(
        self,
        tenant_id: str,
        customer: str,
        subscription_id: str,
        period_start_us: int,
        period_end_us: int,
        currency: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer = customer
        self.subscription_id = subscription_id
        self.period_start_us = period_start_us
        self.period_end_us = period_end_us
        self.currency = currency
        self.total = ZERO
        self.position = 0

    @staticmethod
    def create_id(tenant_id: str, customer: str, period_start_us: int, **_: Any) -> UUID:
        return period_charges_id_for(UUID(tenant_id), customer, period_start_us)

    def charge_id(self) -> str:
        """The id of the next charge: deterministic, so a replay finds the same one."""
        return "chg_" + uuid5(self.id, f"charge:{self.version}").hex

    @event("Charged")
    def charge(
        self,
        charge_id: str,
        amount: Decimal,
        total_after: Decimal,
        position: int,
        meters: dict[str, str],
        usage_events: list[str],
        tenant_id: str = "",
        customer: str = "",
    ) -> None:
        """The period's usage now costs `total_after`: `amount` more than before (less,
        when negative: a volume tier that lowers every unit's price). `usage_events` are
        the events counted since the previous charge, `position` the log position seen;
        `tenant_id` and `customer` repeat the aggregate's, so a follower of the log knows
        whose budget moved without loading it."""
        self.total = total_after
        self.position = position
