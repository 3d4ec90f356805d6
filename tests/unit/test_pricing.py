"""Example-based tests of the pricing engine (domain/pricing.py), model by model."""

from __future__ import annotations

from decimal import Decimal, localcontext
from itertools import pairwise
from typing import Any

import pytest

from domain.pricing import (
    Price,
    PriceError,
    PriceResult,
    Tier,
    evaluate,
    incremental_charge,
    parse_price,
    round_money,
)

D = Decimal

# $1/unit up to 10 (+$5 flat), $0.50 up to 20 (+$2 flat), $0.10 beyond.
UNIT_TIERS: list[dict[str, Any]] = [
    {"up_to": 10, "unit_price": "1", "flat_fee": "5"},
    {"up_to": 20, "unit_price": "0.5", "flat_fee": "2"},
    {"up_to": None, "unit_price": "0.1"},
]


def run(
    price: dict[str, Any],
    quantity: str | None = None,
    events: list[str] | None = None,
) -> PriceResult:
    """Parse the API-shaped price and evaluate it on string usage."""
    return evaluate(
        parse_price(price),
        None if quantity is None else D(quantity),
        None if events is None else [D(e) for e in events],
    )


def breakdown_total(result: PriceResult) -> Decimal:
    return sum((item.amount for item in result.breakdown), D(0))


# ------------------------------------------------------------------------- round_money


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.005", "USD", "1.01"),
        ("1.004", "EUR", "1.00"),
        ("-1.005", "GBP", "-1.01"),
        ("2.675", "INR", "2.68"),
        ("100.5", "JPY", "101"),
        ("100.4", "krw", "100"),
        ("1.0005", "KWD", "1.001"),
        ("1.0004", "BHD", "1.000"),
        ("1.005", "XYZ", "1.01"),
    ],
)
def test_round_money_rounds_half_up_to_the_currency_minor_unit(
    amount: str, currency: str, expected: str
) -> None:
    # given an unrounded amount, when it is rounded for its currency
    rounded = round_money(D(amount), currency)
    # then it has the currency's minor unit and the exact expected value
    assert rounded == D(expected)
    assert rounded.as_tuple().exponent == D(expected).as_tuple().exponent


# ---------------------------------------------------------------------------- per_unit


def test_per_unit_zero_usage_costs_nothing() -> None:
    result = run({"model": "per_unit", "unit_price": "0.001"}, "0")
    assert result.amount == 0
    assert [item.kind for item in result.breakdown] == ["unit"]


def test_per_unit_fractional_quantity_is_priced_exactly_without_rounding() -> None:
    # given $0.10 per GB, when 2.345 GB are used, then the amount keeps every digit
    result = run({"model": "per_unit", "unit_price": "0.10"}, "2.345")
    assert result.amount == D("0.2345")


@pytest.mark.parametrize(
    ("calls", "billable", "amount"),
    [("0", "0", "0"), ("9000", "0", "0"), ("10000", "0", "0"), ("12500", "2500", "2.5")],
)
def test_per_unit_included_units_are_free(calls: str, billable: str, amount: str) -> None:
    # given "$0.001 per call after 10,000 free"
    price = {"model": "per_unit", "unit_price": "0.001", "included_units": 10000}
    # when the period's calls are evaluated
    result = run(price, calls)
    # then only the calls beyond 10,000 are billed
    assert result.quantity == D(calls)
    assert result.billable_quantity == D(billable)
    assert result.amount == D(amount)


# --------------------------------------------------------------------------- transform

TOKENS = {"model": "per_unit", "unit_price": "0.005", "divide_by": 1000}


@pytest.mark.parametrize(
    ("rounding", "tokens", "units", "amount"),
    [
        ("up", "0", "0", "0"),
        ("up", "1000", "1", "0.005"),
        ("up", "1001", "2", "0.010"),
        ("down", "1999", "1", "0.005"),
        ("down", "999", "0", "0"),
        ("none", "1500", "1.5", "0.0075"),
        (None, "1", "0.001", "0.000005"),
    ],
)
def test_transform_divides_then_rounds(
    rounding: str | None, tokens: str, units: str, amount: str
) -> None:
    # given "$0.005 per 1k tokens" with the given rounding (None: the default, "none")
    price = {**TOKENS, "rounding": rounding}
    # when tokens are evaluated
    result = run(price, tokens)
    # then they are billed per (rounded) thousand
    assert result.billable_quantity == D(units)
    assert result.amount == D(amount)


def test_rounding_applies_without_divide_by() -> None:
    # given per-second billing rounded up, when 2.1 seconds are used, then 3 are billed
    result = run({"model": "per_unit", "unit_price": "1", "rounding": "up"}, "2.1")
    assert result.billable_quantity == 3
    assert result.amount == 3


def test_non_terminating_division_is_rounded_to_20_places_and_stays_exact() -> None:
    # given per-minute billing of seconds, when 1 second is used
    result = run({"model": "per_unit", "unit_price": "0.6", "divide_by": 60}, "1")
    # then the minutes are rounded half-even to 20 places and the price applied exactly
    assert result.billable_quantity == D("0.01666666666666666667")
    assert result.amount == D("0.010000000000000000002")


def test_evaluation_does_not_depend_on_the_callers_decimal_context() -> None:
    price = parse_price({"model": "per_unit", "unit_price": "0.001"})
    with localcontext(prec=2):
        result = evaluate(price, D("12345"))
    assert result.amount == D("12.345")


def test_included_units_are_counted_in_transformed_units() -> None:
    # given 2 free thousand-token units, when 2001 tokens are used (3 units rounded up)
    result = run({**TOKENS, "rounding": "up", "included_units": 2}, "2001")
    # then one unit is billed
    assert result.billable_quantity == 1
    assert result.amount == D("0.005")


# --------------------------------------------------------------------------- graduated


@pytest.mark.parametrize(
    ("quantity", "amount", "tiers_entered"),
    [
        ("0", "5", [0]),  # first tier's flat fee even at zero usage
        ("3.25", "8.25", [0]),
        ("10", "15", [0]),  # up_to is inclusive: 10 units stay in tier 0
        ("10.5", "17.25", [0, 1]),  # 0.5 in tier 1 at 0.5, plus its flat fee 2
        ("20", "22", [0, 1]),
        ("25", "22.5", [0, 1, 2]),
    ],
)
def test_graduated_prices_each_unit_in_its_tier(
    quantity: str, amount: str, tiers_entered: list[int]
) -> None:
    # given graduated tiers, when the quantity is evaluated
    result = run({"model": "graduated", "tiers": UNIT_TIERS}, quantity)
    # then each unit is priced in its tier and each entered tier's flat fee is charged once
    assert result.amount == D(amount)
    assert [item.tier for item in result.breakdown] == tiers_entered
    assert sum(item.quantity for item in result.breakdown) == D(quantity)
    assert breakdown_total(result) == result.amount


def test_graduated_breakdown_shows_units_and_fees_per_tier() -> None:
    result = run({"model": "graduated", "tiers": UNIT_TIERS}, "10.5")
    second = result.breakdown[1]
    assert (second.kind, second.quantity, second.unit_price) == ("tier", D("0.5"), D("0.5"))
    assert (second.flat_fee, second.amount) == (D(2), D("2.25"))


def test_graduated_included_units_come_off_before_the_tiers() -> None:
    result = run({"model": "graduated", "tiers": UNIT_TIERS, "included_units": 5}, "15")
    assert result.billable_quantity == 10
    assert result.amount == 15


# ------------------------------------------------------------------------------ volume


@pytest.mark.parametrize(
    ("quantity", "amount", "tier"),
    [
        ("0", "5", 0),  # zero is in the first tier, whose flat fee is charged
        ("3.25", "8.25", 0),
        ("10", "15", 0),
        ("10.5", "7.25", 1),  # all 10.5 units at 0.5, plus tier 1's flat fee 2
        ("20", "12", 1),
        ("20.5", "2.05", 2),
    ],
)
def test_volume_prices_all_units_at_the_tier_the_total_reaches(
    quantity: str, amount: str, tier: int
) -> None:
    result = run({"model": "volume", "tiers": UNIT_TIERS}, quantity)
    assert result.amount == D(amount)
    [item] = result.breakdown
    assert (item.kind, item.tier, item.quantity) == ("tier", tier, D(quantity))


# ----------------------------------------------------------------------------- package

PACKAGE = {"model": "package", "package_size": 100, "package_price": "5"}


@pytest.mark.parametrize(
    ("quantity", "packages"),
    [("0", 0), ("1", 1), ("100", 1), ("100.5", 2), ("250", 3)],
)
def test_package_rounds_partial_packages_up(quantity: str, packages: int) -> None:
    result = run(PACKAGE, quantity)
    assert result.amount == 5 * packages
    assert result.breakdown[0].quantity == packages


def test_package_with_fractional_size_and_included_units() -> None:
    assert run({**PACKAGE, "package_size": "0.5"}, "1.2").amount == 15
    assert run({**PACKAGE, "included_units": 100}, "150").amount == 5


# -------------------------------------------------------------------------- percentage

PERCENT = {"model": "percentage", "rate": "2.5"}


def test_percentage_of_a_bare_quantity() -> None:
    assert run(PERCENT, "0").amount == 0
    assert run(PERCENT, "1000").amount == 25
    assert run(PERCENT, "0.01").amount == D("0.00025")


def test_percentage_bare_quantity_has_no_per_event_fees_but_honours_free_amount() -> None:
    # given a fixed fee and a $200 free allowance, when only a summed quantity is known
    price = {**PERCENT, "fixed_fee_per_event": "0.30", "free_amount": 200, "free_events": 3}
    # then the rate applies to what exceeds the allowance and no per-event fee is charged
    assert run(price, "1000").amount == 20


def test_percentage_events_add_the_fixed_fee_to_each_event() -> None:
    result = run({**PERCENT, "fixed_fee_per_event": "0.30"}, events=["100", "200"])
    assert result.amount == D("8.10")
    assert result.quantity == 300
    kinds = {item.kind: item.amount for item in result.breakdown}
    assert kinds == {"percentage": D("7.5"), "event_fees": D("0.60")}


def test_percentage_min_per_event_clamps_fee_including_the_fixed_fee() -> None:
    # given 1% + $0.10 with a $0.50 minimum per event
    price = {"model": "percentage", "rate": 1, "fixed_fee_per_event": "0.1", "min_per_event": "0.5"}
    # when a $10 event (fee 0.20) and a $100 event (fee 1.10) happen
    result = run(price, events=["10", "100"])
    # then the small event pays the minimum
    assert result.amount == D("1.6")
    assert breakdown_total(result) == result.amount


def test_percentage_max_per_event_caps_each_event() -> None:
    price = {"model": "percentage", "rate": 2, "max_per_event": 5}
    result = run(price, events=["1000", "50"])
    assert result.amount == 6
    # the cap shows in the event_fees item: 21 at 2%, minus 15 taken off the first event
    assert [(i.kind, i.amount) for i in result.breakdown] == [
        ("percentage", D(21)),
        ("event_fees", D(-15)),
    ]


def test_percentage_free_events_pay_nothing_not_even_fixed_fee_or_minimum() -> None:
    price = {
        "model": "percentage",
        "rate": 10,
        "fixed_fee_per_event": 1,
        "free_events": 2,
        "min_per_event": 3,
    }
    assert run(price, events=["100", "100", "100"]).amount == 11


def test_percentage_free_amount_is_consumed_in_event_order() -> None:
    # given 10% + $1 per event with the first $150 free
    price = {"model": "percentage", "rate": 10, "fixed_fee_per_event": 1, "free_amount": 150}
    # when three $100 events happen
    result = run(price, events=["100", "100", "100"])
    # then the first is wholly inside the allowance (pays nothing), the second pays 10% of
    # its $50 excess plus the fixed fee, the third pays in full
    assert result.amount == (0) + (5 + 1) + (10 + 1)
    assert result.breakdown[0].quantity == 150


def test_percentage_event_exactly_filling_the_allowance_is_free() -> None:
    price = {"model": "percentage", "rate": 10, "fixed_fee_per_event": 1, "free_amount": 100}
    assert run(price, events=["100", "50"]).amount == 6


def test_percentage_free_events_consume_the_free_amount_too() -> None:
    price = {"model": "percentage", "rate": 10, "free_events": 1, "free_amount": 150}
    # the free first event uses $100 of the allowance; the second pays on $50 of its $100
    assert run(price, events=["100", "100"]).amount == 5


def test_percentage_events_wholly_inside_included_units_never_reach_the_model() -> None:
    price = {"model": "percentage", "rate": 10, "fixed_fee_per_event": 1, "included_units": 150}
    result = run(price, events=["100", "100"])
    assert result.billable_quantity == 50
    assert result.amount == 6


def test_percentage_with_no_events_still_gets_its_minimum_true_up() -> None:
    result = run({**PERCENT, "fixed_fee_per_event": 1, "minimum_amount": 10}, events=[])
    assert result.amount == 10


# ---------------------------------------------------------------- graduated_percentage

PERCENT_TIERS = {
    "model": "graduated_percentage",
    "tiers": [
        {"up_to": 1000, "rate": 3, "flat_fee": "0.5"},
        {"up_to": 5000, "rate": 2},
        {"up_to": None, "rate": 1, "flat_fee": 10},
    ],
}


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [("0", "0.5"), ("1000", "30.5"), ("1000.5", "30.51"), ("5000", "110.5"), ("6000", "130.5")],
)
def test_graduated_percentage_charges_each_slice_at_its_rate(quantity: str, amount: str) -> None:
    result = run(PERCENT_TIERS, quantity)
    assert result.amount == D(amount)
    assert breakdown_total(result) == result.amount


def test_graduated_percentage_prices_the_sum_of_events() -> None:
    assert run(PERCENT_TIERS, events=["600", "600"]).amount == D("34.5")


# ------------------------------------------------------------------- minimum / maximum


def test_minimum_true_up_at_zero_usage() -> None:
    # given $0.01 per unit with a $20 minimum, when nothing is used
    result = run({"model": "per_unit", "unit_price": "0.01", "minimum_amount": 20}, "0")
    # then the amount is trued up to the minimum, shown as its own breakdown item
    assert result.amount == 20
    assert [(i.kind, i.amount) for i in result.breakdown] == [
        ("unit", D(0)),
        ("minimum_true_up", D(20)),
    ]


def test_minimum_does_nothing_once_usage_exceeds_it() -> None:
    result = run({"model": "per_unit", "unit_price": 1, "minimum_amount": 20}, "25")
    assert result.amount == 25
    assert len(result.breakdown) == 1


def test_maximum_caps_the_total_with_a_negative_adjustment() -> None:
    result = run({"model": "graduated", "tiers": UNIT_TIERS, "maximum_amount": 20}, "25")
    assert result.amount == 20
    assert result.breakdown[-1].kind == "maximum_cap"
    assert result.breakdown[-1].amount == D("-2.5")
    assert breakdown_total(result) == 20


# ------------------------------------------------------------------ incremental charges


def test_incremental_charges_add_up_and_include_flat_fees_when_tiers_are_entered() -> None:
    price = parse_price({"model": "graduated", "tiers": UNIT_TIERS})
    steps = [D(0), D(10), D("10.5"), D(25)]
    charges = [incremental_charge(price, a, b) for a, b in pairwise(steps)]
    assert charges == [D(10), D("2.25"), D("5.25")]
    assert sum(charges) == evaluate(price, D(25)).amount - evaluate(price, D(0)).amount


def test_incremental_charge_is_zero_while_under_the_minimum() -> None:
    price = parse_price({"model": "per_unit", "unit_price": "0.01", "minimum_amount": 20})
    assert incremental_charge(price, D(0), D(100)) == 0
    assert incremental_charge(price, D(1999), D(2001)) == D("0.01")


def test_incremental_charge_can_be_negative_for_volume_pricing() -> None:
    price = parse_price({"model": "volume", "tiers": UNIT_TIERS})
    assert incremental_charge(price, D(10), D("10.5")) == D("-7.75")


def test_incremental_charge_with_events() -> None:
    price = parse_price({**PERCENT, "fixed_fee_per_event": "0.30"})
    charge = incremental_charge(
        price, None, None, before_events=[D(100)], after_events=[D(100), D(200)]
    )
    assert charge == D("5.30")


# ------------------------------------------------------------------------- parse_price


def test_parse_price_converts_numbers_exactly() -> None:
    # given a float, an int, a string and a Decimal, then each becomes the exact Decimal
    price = parse_price(
        {
            "model": "percentage",
            "rate": 0.1,
            "fixed_fee_per_event": 3,
            "min_per_event": " 0.05 ",
            "max_per_event": D("9.99"),
            "free_events": "2",
            "meter": "payments",
        }
    )
    assert price.rate == D("0.1")
    assert (price.fixed_fee_per_event, price.min_per_event) == (D(3), D("0.05"))
    assert (price.max_per_event, price.free_events, price.meter) == (D("9.99"), 2, "payments")


def test_parse_price_tiers_and_defaults() -> None:
    price = parse_price({"model": "graduated", "tiers": UNIT_TIERS, "divide_by": None})
    assert price.tiers[0] == Tier(up_to=D(10), unit_price=D(1), flat_fee=D(5))
    assert price.tiers[2] == Tier(up_to=None, unit_price=D("0.1"))
    assert (price.rounding, price.divide_by, price.included_units) == ("none", None, 0)


def test_parse_price_accepts_a_rate_above_100_percent() -> None:
    assert run({"model": "percentage", "rate": 150}, "10").amount == 15


def tiers_with(index: int, **changes: Any) -> list[dict[str, Any]]:
    tiers = [dict(tier) for tier in UNIT_TIERS]
    tiers[index].update(changes)
    return tiers


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "model"),
        ({"model": "tiered"}, "model"),
        ({"model": "per_unit"}, "unit_price"),
        ({"model": "per_unit", "unit_price": None}, "unit_price"),
        ({"model": "per_unit", "unit_price": "-1"}, "unit_price"),
        ({"model": "per_unit", "unit_price": True}, "unit_price"),
        ({"model": "per_unit", "unit_price": "abc"}, "unit_price"),
        ({"model": "per_unit", "unit_price": "NaN"}, "unit_price"),
        ({"model": "per_unit", "unit_price": float("inf")}, "unit_price"),
        ({"model": "per_unit", "unit_price": [1]}, "unit_price"),
        ({"model": "per_unit", "unit_price": "1e30"}, "unit_price"),
        ({"model": "per_unit", "unit_price": "1e-31"}, "unit_price"),
        ({"model": "per_unit", "unit_price": 1, "unit_prce": 1}, "unit_prce"),
        ({"model": "per_unit", "unit_price": 1, "tiers": UNIT_TIERS}, "tiers"),
        ({"model": "per_unit", "unit_price": 1, "divide_by": 0}, "divide_by"),
        ({"model": "per_unit", "unit_price": 1, "divide_by": "-1000"}, "divide_by"),
        ({"model": "per_unit", "unit_price": 1, "rounding": "nearest"}, "rounding"),
        ({"model": "per_unit", "unit_price": 1, "included_units": -1}, "included_units"),
        ({"model": "per_unit", "unit_price": 1, "meter": ""}, "meter"),
        (
            {"model": "per_unit", "unit_price": 1, "minimum_amount": 5, "maximum_amount": 4},
            "maximum_amount",
        ),
        ({"model": "package", "package_price": 5}, "package_size"),
        ({"model": "package", "package_size": 0, "package_price": 5}, "package_size"),
        ({"model": "package", "package_size": 10}, "package_price"),
        ({"model": "percentage"}, "rate"),
        ({"model": "percentage", "rate": "-0.5"}, "rate"),
        ({"model": "percentage", "rate": 1, "free_events": "1.5"}, "free_events"),
        ({"model": "percentage", "rate": 1, "free_events": -1}, "free_events"),
        ({"model": "percentage", "rate": 1, "free_amount": -1}, "free_amount"),
        (
            {"model": "percentage", "rate": 1, "min_per_event": 2, "max_per_event": 1},
            "max_per_event",
        ),
        ({"model": "graduated"}, "tiers"),
        ({"model": "graduated", "tiers": []}, "tiers"),
        ({"model": "graduated", "tiers": "none"}, "tiers"),
        ({"model": "volume", "tiers": [5]}, "tiers.0"),
        ({"model": "volume", "tiers": tiers_with(1, up_to=10)}, "tiers.1.up_to"),
        ({"model": "volume", "tiers": tiers_with(1, up_to=5)}, "tiers.1.up_to"),
        ({"model": "volume", "tiers": tiers_with(2, up_to=30)}, "tiers.2.up_to"),
        ({"model": "volume", "tiers": tiers_with(0, up_to=None)}, "tiers.0.up_to"),
        ({"model": "volume", "tiers": tiers_with(0, up_to=-1)}, "tiers.0.up_to"),
        ({"model": "graduated", "tiers": tiers_with(1, unit_price=None)}, "tiers.1.unit_price"),
        ({"model": "graduated", "tiers": tiers_with(2, flat_fee="-2")}, "tiers.2.flat_fee"),
        ({"model": "graduated", "tiers": tiers_with(0, rate=1)}, "tiers.0.rate"),
        (
            {"model": "graduated_percentage", "tiers": [{"up_to": None, "unit_price": 1}]},
            "tiers.0.unit_price",
        ),
    ],
)
def test_parse_price_rejects_invalid_input_naming_the_field(data: Any, field: str) -> None:
    # given an invalid price, when it is parsed, then the error names the culprit field
    with pytest.raises(PriceError) as caught:
        parse_price(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)


def test_parse_price_rejects_a_non_object() -> None:
    with pytest.raises(PriceError) as caught:
        parse_price(["per_unit"])  # type: ignore[arg-type]
    assert caught.value.field == ""


def test_price_constructed_directly_is_validated_too() -> None:
    with pytest.raises(PriceError, match="unit_price"):
        Price(model="per_unit")
    with pytest.raises(PriceError, match=r"tiers\.0\.up_to"):
        Price(model="volume", tiers=(Tier(up_to=D(5)),))


# ---------------------------------------------------------------------- evaluate input


@pytest.mark.parametrize(
    ("quantity", "events", "field"),
    [
        (D(-1), None, "quantity"),
        (None, None, "quantity"),
        (D(5), [D(1), D(2)], "quantity"),
        (None, [D(1), D(-2)], "events.1"),
        (D("NaN"), None, "quantity"),
    ],
)
def test_evaluate_rejects_invalid_usage(
    quantity: Decimal | None, events: list[Decimal] | None, field: str
) -> None:
    price = parse_price(PERCENT)
    with pytest.raises(PriceError) as caught:
        evaluate(price, quantity, events)
    assert caught.value.field == field


def test_evaluate_accepts_a_quantity_matching_its_events() -> None:
    result = evaluate(parse_price(PERCENT), D(300), [D(100), D("200.0")])
    assert result.amount == D("7.5")
