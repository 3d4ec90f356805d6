"""Wallet rules without I/O: allocation order, idempotent top-ups, alerts once per crossing."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from domain.errors import Conflict, InvalidInput
from domain.wallets import Wallet, allocate, ledger_identity, positive_amount

D = Decimal


def _wallet(threshold: str | None = "10", block: bool = True) -> Wallet:
    return Wallet(
        tenant_id=uuid.uuid4().hex,
        customer="c1",
        currency="USD",
        low_balance_threshold=None if threshold is None else D(threshold),
        block_on_depletion=block,
    )


def test_debit_spends_soonest_expiring_grant_first_then_paid_balance() -> None:
    grants = {
        "late": {"amount": D(5), "remaining": D(5), "expires_us": 2_000, "refresh": None},
        "soon": {"amount": D(3), "remaining": D(3), "expires_us": 1_000, "refresh": None},
        "never": {"amount": D(4), "remaining": D(4), "expires_us": None, "refresh": None},
        "gone": {"amount": D(9), "remaining": D(9), "expires_us": 10, "refresh": None},
    }
    split = allocate(grants, D("13.5"), now_us=100)
    assert split.from_grants == {"soon": D(3), "late": D(5), "never": D(4)}
    assert split.from_balance == D("1.5")


def test_same_top_up_key_is_one_top_up_and_another_amount_conflicts() -> None:
    wallet = _wallet()
    assert wallet.check_top_up("k1", D(20)) is None
    wallet.top_up(
        top_up_id="wtu_1", amount=D(20), idempotency_key="k1", reference=None, balance_after=D(20)
    )
    assert wallet.check_top_up("k1", D(20)) == "wtu_1"
    with pytest.raises(Conflict):
        wallet.check_top_up("k1", D(21))
    assert wallet.balance == D(20)


def test_low_balance_and_depletion_are_recorded_once_per_crossing() -> None:
    wallet = _wallet(threshold="10")
    wallet.top_up(
        top_up_id="t", amount=D(30), idempotency_key="k", reference=None, balance_after=D(30)
    )
    wallet.record_crossings()
    kinds = lambda: [type(e).__name__ for e in wallet.collect_events()]  # noqa: E731
    kinds()
    for amount in ("15", "1", "1"):  # 15, 14 and 13 left: above the threshold
        wallet.debit(
            charge_id=f"c{amount}{wallet.version}",
            amount=D(5),
            from_grants={},
            from_balance=D(5),
            cause={},
            balance_after=wallet.balance - 5,
        )
        wallet.record_crossings()
    assert kinds() == ["Debited", "Debited", "Debited"]
    wallet.debit(
        charge_id="x",
        amount=D(10),
        from_grants={},
        from_balance=D(10),
        cause={},
        balance_after=D(5),
    )
    wallet.record_crossings()
    wallet.debit(
        charge_id="y", amount=D(1), from_grants={}, from_balance=D(1), cause={}, balance_after=D(4)
    )
    wallet.record_crossings()
    assert kinds() == ["Debited", "LowBalanceReached", "Debited"]
    wallet.debit(
        charge_id="z", amount=D(6), from_grants={}, from_balance=D(6), cause={}, balance_after=D(-2)
    )
    wallet.record_crossings()
    assert kinds() == ["Debited", "Depleted"]
    assert wallet.balance == D(-2)
    wallet.top_up(
        top_up_id="t2", amount=D(50), idempotency_key="k2", reference=None, balance_after=D(48)
    )
    wallet.record_crossings()
    assert kinds() == ["ToppedUp", "LowBalanceCleared", "Replenished"]


def test_ledger_identity_adds_up_movements() -> None:
    movements = [
        ("top_up", D(100)),
        ("grant", D(10)),
        ("debit", D("30.5")),
        ("expiry", D(2)),
        ("refund", D("0.5")),
    ]
    assert ledger_identity(movements) == D(78)


@pytest.mark.parametrize("raw", [None, True, "abc", 0, "-1", "NaN", "1e-20"])
def test_amounts_must_be_positive_decimals(raw: object) -> None:
    with pytest.raises(InvalidInput):
        positive_amount(raw, "amount")
