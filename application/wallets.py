"""Wallet commands, with optimistic concurrency: a command that loses a race on the
wallet's version reloads it and tries again, so no top-up or debit is ever lost."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.store import Ledger
from domain.catalog import check_currency
from domain.errors import Conflict, InvalidInput, NotFound
from domain.instants import to_us
from domain.wallets import REFRESH, Wallet, allocate, positive_amount, wallet_id_for

T = TypeVar("T")
ATTEMPTS = 50


class Wallets:
    """Open wallets, top them up, grant credits, debit charges, refund, expire grants."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def open(self, tenant_id: UUID, data: dict[str, Any]) -> Wallet:
        customer = data.get("customer")
        if not isinstance(customer, str) or not customer:
            raise InvalidInput("customer is required", "customer")
        currency = check_currency(str(data.get("currency") or "USD"))
        threshold = data.get("low_balance_threshold")
        wallet = Wallet(
            tenant_id=tenant_id.hex,
            customer=customer,
            currency=currency,
            low_balance_threshold=None
            if threshold is None
            else _non_negative(threshold, "low_balance_threshold"),
            block_on_depletion=bool(data.get("block_on_depletion", False)),
        )
        try:
            self.ledger.save(wallet)
        except IntegrityError:
            raise Conflict(
                f"customer {customer!r} already has a {currency} wallet", "customer"
            ) from None
        return wallet

    def get(self, tenant_id: UUID, wallet_id: UUID) -> Wallet:
        try:
            wallet: Wallet = self.ledger.repository.get(wallet_id)
        except AggregateNotFoundError:
            raise NotFound("no such wallet", "id") from None
        if wallet.tenant_id != tenant_id.hex:
            raise NotFound("no such wallet", "id")
        return wallet

    def find(self, tenant_id: UUID, customer: str, currency: str) -> Wallet | None:
        try:
            return self.ledger.repository.get(wallet_id_for(tenant_id, customer, currency))
        except AggregateNotFoundError:
            return None

    def top_up(self, tenant_id: UUID, wallet_id: UUID, data: dict[str, Any]) -> tuple[str, bool]:
        """Add money; answer (top-up id, whether it was a retry of an earlier top-up)."""
        amount = positive_amount(data.get("amount"), "amount")
        key = data.get("idempotency_key")
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise InvalidInput("idempotency_key is required (1-255 characters)", "idempotency_key")
        reference = data.get("reference")

        def change(wallet: Wallet) -> tuple[str, bool]:
            earlier = wallet.check_top_up(key, amount)
            if earlier is not None:
                return earlier, True
            top_up_id = "wtu_" + uuid.uuid5(wallet.id, f"top-up:{key}").hex
            wallet.top_up(
                top_up_id=top_up_id,
                amount=amount,
                idempotency_key=key,
                reference=reference,
                balance_after=wallet.balance + amount,
                tenant_id=wallet.tenant_id,
                customer=wallet.customer,
            )
            wallet.record_crossings()
            return top_up_id, False

        return self._retrying(tenant_id, wallet_id, change)

    def grant(
        self, tenant_id: UUID, wallet_id: UUID, data: dict[str, Any], expires_at: datetime | None
    ) -> str:
        amount = positive_amount(data.get("amount"), "amount")
        refresh = data.get("refresh")
        if refresh not in REFRESH:
            raise InvalidInput('refresh must be "per_period" or null', "refresh")

        def change(wallet: Wallet) -> str:
            grant_id = "wgr_" + uuid.uuid4().hex
            wallet.grant(
                grant_id=grant_id,
                amount=amount,
                expires_us=None if expires_at is None else to_us(expires_at),
                refresh=refresh,
                balance_after=wallet.balance + amount,
            )
            wallet.record_crossings()
            return grant_id

        return self._retrying(tenant_id, wallet_id, change)

    def debit(
        self,
        tenant_id: UUID,
        wallet_id: UUID,
        charge_id: str,
        amount: Decimal,
        cause: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Pay a charge from the wallet (once per charge id); False when already paid."""
        return self._retrying(
            tenant_id, wallet_id, lambda wallet: apply_debit(wallet, charge_id, amount, cause, now)
        )

    def refund(self, tenant_id: UUID, wallet_id: UUID, amount: Decimal, reason: str) -> str:
        amount = positive_amount(amount, "amount")
        return self._retrying(
            tenant_id,
            wallet_id,
            lambda wallet: apply_refund(wallet, "wrf_" + uuid.uuid4().hex, amount, reason),
        )

    def expire_grants(self, tenant_id: UUID, wallet_id: UUID, now: datetime) -> int:
        """Record the expiry of the wallet's lapsed grants; answer how many lapsed."""

        def change(wallet: Wallet) -> int:
            count = expire_lapsed(wallet, now)
            wallet.record_crossings()
            return count

        return self._retrying(tenant_id, wallet_id, change)

    def _retrying(self, tenant_id: UUID, wallet_id: UUID, change: Callable[[Wallet], T]) -> T:
        """Load, change, save; on a version conflict (another writer won) do it again."""
        for _ in range(ATTEMPTS):
            wallet = self.get(tenant_id, wallet_id)
            result = change(wallet)
            try:
                self.ledger.save(wallet)
            except IntegrityError:
                continue
            return result
        raise Conflict("the wallet is too busy; retry", "id")


def expire_lapsed(wallet: Wallet, now: datetime) -> int:
    """Record the expiry of every grant past its expiry; answer how many lapsed."""
    lapsed = wallet.expirable(to_us(now))
    for grant_id, remaining in lapsed:
        wallet.expire(grant_id=grant_id, amount=remaining, balance_after=wallet.balance - remaining)
    return len(lapsed)


def apply_debit(
    wallet: Wallet, charge_id: str, amount: Decimal, cause: dict[str, Any], now: datetime
) -> bool:
    """Debit a charge (grants first, soonest expiry first); False when already paid.
    The caller saves the wallet."""
    if not wallet.check_new_charge(charge_id):
        return False
    expire_lapsed(wallet, now)
    split = allocate(wallet.grants, amount, to_us(now))
    wallet.debit(
        charge_id=charge_id,
        amount=amount,
        from_grants=split.from_grants,
        from_balance=split.from_balance,
        cause=cause,
        balance_after=wallet.balance - amount,
    )
    wallet.record_crossings()
    return True


def apply_refund(wallet: Wallet, refund_id: str, amount: Decimal, reason: str) -> str:
    """Return money to the paid balance. The caller saves the wallet."""
    wallet.refund(
        refund_id=refund_id, amount=amount, reason=reason, balance_after=wallet.balance + amount
    )
    wallet.record_crossings()
    return refund_id


def _non_negative(raw: Any, field: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        raise InvalidInput(f"{field} must be a decimal number", field) from None
    if not value.is_finite() or value < 0:
        raise InvalidInput(f"{field} must be zero or more", field)
    return value
