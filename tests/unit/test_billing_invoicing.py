"""Invoice math (domain/invoicing.py): lines, credits, minimum, rounding, corrections."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.billing import parse_plan, plan_spec
from domain.invoicing import AdvanceFee, MeterUsage, adjustment, compute_invoice, money

D = Decimal


def plan(**changes: Any) -> Any:
    data: dict[str, Any] = {
        "key": "p",
        "currency": "USD",
        "interval": "month",
        "prices": [{"meter": "calls", "model": "per_unit", "unit_price": "0.0125"}],
    }
    data.update(changes)
    return plan_spec(parse_plan(data))


def usage(quantity: str) -> dict[str, MeterUsage]:
    return {"calls": MeterUsage(D(quantity))}


@pytest.mark.parametrize(
    ("currency", "unit_price", "quantities", "rounded", "total"),
    [
        # 3 x 0.0125 = 0.0375 -> 0.04 half-up; 1 x -> 0.0125 -> 0.01
        ("USD", "0.0125", ["3", "1"], ["0.04", "0.01"], "0.05"),
        ("JPY", "2.5", ["3", "1"], ["8", "3"], "11"),  # 7.5 -> 8, 2.5 -> 3
        ("KWD", "0.0125", ["3", "1"], ["0.038", "0.013"], "0.051"),  # 0.0375, 0.0125
    ],
)
def test_lines_round_half_up_and_the_total_is_their_sum(
    currency: str, unit_price: str, quantities: list[str], rounded: list[str], total: str
) -> None:
    p = plan(
        currency=currency,
        prices=[
            {"meter": "a", "model": "per_unit", "unit_price": unit_price},
            {"meter": "b", "model": "per_unit", "unit_price": unit_price},
        ],
    )
    draft = compute_invoice(
        p,
        0,
        10,
        {"a": MeterUsage(D(quantities[0])), "b": MeterUsage(D(quantities[1]))},
        arrears_fee=False,
    )
    assert [money(x.rounded, currency) for x in draft.lines] == rounded
    assert money(draft.total, currency) == total
    assert draft.total == sum(x.rounded for x in draft.lines)
    # the exact amounts are kept too, for audit
    assert draft.lines[0].amount == D(quantities[0]) * D(unit_price)


def test_base_fee_in_arrears_bills_this_period_and_in_advance_the_next() -> None:
    arrears = plan(base_fee={"amount": "20", "timing": "in_arrears"})
    draft = compute_invoice(arrears, 0, 10, usage("0"), arrears_fee=True)
    assert [(x.kind, x.period_start_us) for x in draft.lines] == [("usage", 0), ("base_fee", 0)]
    advance = plan(base_fee={"amount": "20", "timing": "in_advance"})
    draft = compute_invoice(
        advance, 0, 10, usage("0"), arrears_fee=False, advance=AdvanceFee(advance, 10, 20)
    )
    assert [(x.kind, x.period_start_us) for x in draft.lines] == [("usage", 0), ("base_fee", 10)]
    assert draft.total == D(20)


def test_included_credits_are_spent_on_usage_never_on_fees() -> None:
    p = plan(included_credits="5", base_fee={"amount": "20", "timing": "in_arrears"})
    small = compute_invoice(p, 0, 10, usage("80"), arrears_fee=True)  # usage 1.00
    assert small.credits_applied == D("1.00")
    assert small.total == D("20.00")
    big = compute_invoice(p, 0, 10, usage("800"), arrears_fee=True)  # usage 10.00
    assert big.credits_applied == D("5.00")
    assert big.total == D("25.00")


def test_the_minimum_is_a_true_up_over_usage_fee_and_credits() -> None:
    p = plan(
        minimum_amount="30", included_credits="1", base_fee={"amount": "10", "timing": "in_advance"}
    )
    draft = compute_invoice(p, 0, 10, usage("400"), arrears_fee=False, prepaid_fee=D("10"))
    # usage 5.00, prepaid fee 10.00, credits 1.00 -> 14.00 attributable -> true-up 16.00
    true_up = draft.line_of_kind("minimum_true_up")
    assert true_up is not None and true_up.rounded == D("16.00")
    assert draft.subtotal == D("21.00") and draft.total == D("20.00")
    assert (
        compute_invoice(
            p, 0, 10, usage("4000"), arrears_fee=False, prepaid_fee=D("10")
        ).line_of_kind("minimum_true_up")
        is None
    )


def test_zero_usage_still_lists_every_priced_meter() -> None:
    p = plan(
        prices=[
            {
                "meter": "a",
                "model": "graduated",
                "tiers": [{"up_to": 10, "unit_price": 1, "flat_fee": 3}, {"unit_price": "0.5"}],
            },
            {"meter": "b", "model": "per_unit", "unit_price": 1, "minimum_amount": 2},
        ]
    )
    draft = compute_invoice(p, 0, 10, {}, arrears_fee=False)
    assert [x.meter for x in draft.lines] == ["a", "b"]
    assert [x.rounded for x in draft.lines] == [D("3.00"), D("2.00")]  # flat fee, true-up


def test_percentage_prices_each_event_in_log_order() -> None:
    p = plan(
        prices=[
            {
                "meter": "pay",
                "model": "percentage",
                "rate": "2.9",
                "fixed_fee_per_event": "0.30",
                "free_events": 1,
            }
        ]
    )
    events = (D("100"), D("50"), D("10"))
    draft = compute_invoice(p, 0, 10, {"pay": MeterUsage(D("160"), events)}, arrears_fee=False)
    # first event free; 50 -> 1.45 + 0.30; 10 -> 0.29 + 0.30
    assert draft.lines[0].amount == D("2.34")


def test_a_correction_plus_the_original_equals_the_recomputed_invoice() -> None:
    p = plan(
        minimum_amount="1",
        included_credits="0.10",
        prices=[{"meter": "calls", "model": "per_unit", "unit_price": "0.0125"}],
    )
    billed = compute_invoice(p, 0, 10, usage("3"), arrears_fee=False)  # 0.04, true-up 1.06
    corrected = compute_invoice(p, 0, 10, usage("200"), arrears_fee=False)  # 2.50
    delta = adjustment(billed, corrected)
    kinds = [x.kind for x in delta.lines]
    assert kinds == ["usage_adjustment", "minimum_adjustment"]
    assert delta.lines[0].quantity == D(197)
    assert billed.total + delta.total == corrected.total
    assert billed.credits_applied + delta.credits_applied == corrected.credits_applied
    assert delta.total == sum(x.rounded for x in delta.lines) - delta.credits_applied
    assert adjustment(billed, billed).lines == ()
