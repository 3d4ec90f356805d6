"""Prepaid wallets: top-ups, free credit grants, debits for usage, refunds, expiries.

A wallet is one aggregate per (tenant, customer, currency). Every movement records
the balance it leaves, so the ledger identity can be checked event by event:

    balance = top-ups + grants - debits - expiries + refunds

Debits spend unexpired grants first, soonest expiry first, then the paid balance,
which may go below zero by at most the charges in flight (usage is never refused
here: it was already served; access is blocked instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, InvalidInput

ZERO = Decimal(0)
REFRESH = (None, "per_period")


def wallet_id_for(tenant_id: UUID, customer: str, currency: str) -> UUID:
    """One wallet per customer and currency."""
    return uuid5(tenant_id, f"wallet:{customer}:{currency}")


def positive_amount(raw: Any, field: str) -> Decimal:
    """A money amount from a JSON number or decimal string; must be > 0."""
    if isinstance(raw, bool) or raw is None:
        raise InvalidInput(f"{field} is required (a positive decimal)", field)
    try:
        amount = Decimal(str(raw))
    except ArithmeticError:
        raise InvalidInput(f"{field} must be a decimal number", field) from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidInput(f"{field} must be greater than zero", field)
    if amount.as_tuple().exponent < -12:  # type: ignore[operator]
        raise InvalidInput(f"{field} has more than 12 decimal places", field)
    return amount


@dataclass(frozen=True)
class Allocation:
    """Where a debit's money comes from: each grant drawn, then the paid balance."""

    from_grants: dict[str, Decimal]
    from_balance: Decimal


def allocate(grants: dict[str, dict[str, Any]], amount: Decimal, now_us: int) -> Allocation:
    """Spend unexpired grants first, soonest expiry first (no expiry last), then paid."""
    usable = sorted(
        (g for g in grants.items() if g[1]["remaining"] > 0 and not _expired(g[1], now_us)),
        key=lambda g: (g[1]["expires_us"] is None, g[1]["expires_us"] or 0, g[0]),
    )
    left, taken = amount, {}
    for grant_id, grant in usable:
        if left <= 0:
            break
        part = min(left, grant["remaining"])
        taken[grant_id] = part
        left -= part
    return Allocation(from_grants=taken, from_balance=left)


def _expired(grant: dict[str, Any], now_us: int) -> bool:
    return grant["expires_us"] is not None and grant["expires_us"] <= now_us


class Wallet(Aggregate):
    """A customer's prepaid balance in one currency."""

    @event("Opened")
    def __init__(
        self,
        tenant_id: str,
        customer: str,
        currency: str,
        low_balance_threshold: Decimal | None,
        block_on_depletion: bool,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer = customer
        self.currency = currency
        self.low_balance_threshold = low_balance_threshold
        self.block_on_depletion = block_on_depletion
        self.paid = ZERO
        self.grants: dict[str, dict[str, Any]] = {}
        self.top_ups: dict[str, tuple[str, Decimal]] = {}  # idempotency key -> (id, amount)
        self.charges: dict[str, bool] = {}  # charge ids already paid (a dict: JSON-safe)
        self.drawn: dict[str, Decimal] = {}  # debited per billing period (start, in µs)
        self.low = False
        self.depleted = False

    @staticmethod
    def create_id(tenant_id: str, customer: str, currency: str, **_: Any) -> UUID:
        return wallet_id_for(UUID(tenant_id), customer, currency)

    @property
    def balance(self) -> Decimal:
        """Paid balance plus every grant's remaining credit."""
        return self.paid + sum((g["remaining"] for g in self.grants.values()), ZERO)

    # Top-ups

    def check_top_up(self, key: str, amount: Decimal) -> str | None:
        """The id of an earlier top-up with this key (a retry), None if new; 409 when the
        key was used for another amount."""
        earlier = self.top_ups.get(key)
        if earlier is None:
            return None
        if earlier[1] != amount:
            raise Conflict(
                f"idempotency_key {key!r} was used for a top-up of {earlier[1]}", "idempotency_key"
            )
        return earlier[0]

    @event("ToppedUp")
    def top_up(
        self,
        top_up_id: str,
        amount: Decimal,
        idempotency_key: str,
        reference: str | None,
        balance_after: Decimal,
        tenant_id: str = "",
        customer: str = "",
    ) -> None:
        """Money was added to the paid balance (`tenant_id` and `customer` repeat the
        wallet's, so a webhook can be built from this event alone)."""
        self.paid += amount
        self.top_ups[idempotency_key] = (top_up_id, amount)

    # Grants

    @event("Granted")
    def grant(
        self,
        grant_id: str,
        amount: Decimal,
        expires_us: int | None,
        refresh: str | None,
        balance_after: Decimal,
    ) -> None:
        """Free credits were granted; they are spent before the paid balance."""
        self.grants[grant_id] = {
            "amount": amount,
            "remaining": amount,
            "expires_us": expires_us,
            "refresh": refresh,
        }

    @event("GrantExpired")
    def expire(self, grant_id: str, amount: Decimal, balance_after: Decimal) -> None:
        """What was left of a grant lapsed at its expiry."""
        self.grants[grant_id]["remaining"] = ZERO

    @event("GrantRefreshed")
    def refresh_grant(
        self, grant_id: str, amount: Decimal, expires_us: int | None, balance_after: Decimal
    ) -> None:
        """A per-period grant was restored to its full amount for a new period."""
        self.grants[grant_id]["remaining"] = self.grants[grant_id]["amount"]
        self.grants[grant_id]["expires_us"] = expires_us

    def expirable(self, now_us: int) -> list[tuple[str, Decimal]]:
        return [
            (gid, g["remaining"])
            for gid, g in self.grants.items()
            if g["remaining"] > 0 and _expired(g, now_us)
        ]

    # Debits and refunds

    def check_new_charge(self, charge_id: str) -> bool:
        """False when this charge was already debited (a replayed charge is a no-op)."""
        return charge_id not in self.charges

    @event("Debited")
    def debit(
        self,
        charge_id: str,
        amount: Decimal,
        from_grants: dict[str, Decimal],
        from_balance: Decimal,
        cause: dict[str, Any],
        balance_after: Decimal,
    ) -> None:
        """Usage was paid for: grants first, then the paid balance (may go below zero)."""
        for grant_id, part in from_grants.items():
            self.grants[grant_id]["remaining"] -= part
        self.paid -= from_balance
        self.charges[charge_id] = True
        period = cause.get("period_start_us")
        if period is not None:
            self.drawn[str(period)] = self.drawn.get(str(period), ZERO) + amount

    @event("Refunded")
    def refund(self, refund_id: str, amount: Decimal, reason: str, balance_after: Decimal) -> None:
        """Money was returned to the paid balance (a correction of a debit)."""
        self.paid += amount

    # Alerts: each recorded once per crossing

    @event("LowBalanceReached")
    def reach_low_balance(
        self,
        balance: Decimal,
        threshold: Decimal,
        tenant_id: str = "",
        customer: str = "",
        currency: str = "",
    ) -> None:
        """The balance fell to or below the low-balance threshold."""
        self.low = True

    @event("LowBalanceCleared")
    def clear_low_balance(self, balance: Decimal) -> None:
        """The balance rose above the low-balance threshold again."""
        self.low = False

    @event("Depleted")
    def deplete(
        self,
        balance: Decimal,
        tenant_id: str = "",
        customer: str = "",
        currency: str = "",
        blocks_access: bool = False,
    ) -> None:
        """The balance reached zero or below; with block_on_depletion access is blocked."""
        self.depleted = True

    @event("Replenished")
    def replenish(
        self,
        balance: Decimal,
        tenant_id: str = "",
        customer: str = "",
        currency: str = "",
        blocks_access: bool = False,
    ) -> None:
        """The balance is above zero again; access is restored."""
        self.depleted = False

    def record_crossings(self) -> None:
        """Record the alert events the current balance calls for (none when nothing
        crossed since the last time)."""
        balance = self.balance
        threshold = self.low_balance_threshold
        if threshold is not None:
            if balance <= threshold and not self.low:
                self.reach_low_balance(balance=balance, threshold=threshold, **self._who())
            elif balance > threshold and self.low:
                self.clear_low_balance(balance=balance)
        blocks = self.block_on_depletion
        if balance <= 0 and not self.depleted:
            self.deplete(balance=balance, blocks_access=blocks, **self._who())
        elif balance > 0 and self.depleted:
            self.replenish(balance=balance, blocks_access=blocks, **self._who())

    def _who(self) -> dict[str, str]:
        """Whose wallet: repeated on alert events so a webhook needs no other state."""
        return {"tenant_id": self.tenant_id, "customer": self.customer, "currency": self.currency}


def ledger_identity(movements: list[tuple[str, Decimal]]) -> Decimal:
    """The balance the movements add up to: top-ups + grants - debits - expiries + refunds
    (+ refreshed grant credit)."""
    sign = {"top_up": 1, "grant": 1, "refund": 1, "refresh": 1, "debit": -1, "expiry": -1}
    return sum((sign[kind] * amount for kind, amount in movements), ZERO)
