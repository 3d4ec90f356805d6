"""Property tests of the pricing engine (domain/pricing.py) with Hypothesis."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, localcontext
from itertools import accumulate, pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.pricing import (
    Price,
    PriceResult,
    Tier,
    evaluate,
    incremental_charge,
    round_money,
)

D = Decimal
# Per-test settings (not a global profile, which would change other modules' tests too).
PROPERTY = settings(deadline=None, max_examples=150)


def decimals(max_value: int, places: int = 3) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=0, max_value=max_value, places=places, allow_nan=False, allow_infinity=False
    )


quantities = decimals(100_000)
money = decimals(100, places=4)


@st.composite
def tier_lists(
    draw: st.DrawFn, rate: bool = False, bound: st.SearchStrategy[Decimal] | None = None
) -> tuple[Tier, ...]:
    """1-5 tiers with strictly increasing bounds, the last unbounded."""
    bounds = sorted(
        draw(st.sets(decimals(50_000, places=2) if bound is None else bound, max_size=4))
    )
    tiers = []
    for up_to in [*bounds, None]:
        price = draw(money)
        tiers.append(
            Tier(
                up_to=up_to,
                unit_price=D(0) if rate else price,
                rate=price if rate else D(0),
                flat_fee=draw(money),
            )
        )
    return tuple(tiers)


@st.composite
def common_params(draw: st.DrawFn) -> dict[str, object]:
    """Optional transform, included units and minimum / maximum."""
    params: dict[str, object] = {"included_units": draw(decimals(1_000))}
    if draw(st.booleans()):
        params["divide_by"] = draw(st.sampled_from([D(1), D(60), D(1000), D("0.5"), D(3)]))
    params["rounding"] = draw(st.sampled_from(["up", "down", "none"]))
    minimum = draw(st.none() | decimals(10_000))
    maximum = draw(st.none() | decimals(10_000))
    if minimum is not None and maximum is not None and maximum < minimum:
        minimum, maximum = maximum, minimum
    params.update(minimum_amount=minimum, maximum_amount=maximum)
    return params


@st.composite
def tiered_prices(draw: st.DrawFn, model: str) -> Price:
    rate = model == "graduated_percentage"
    return Price(model=model, tiers=draw(tier_lists(rate=rate)), **draw(common_params()))


@st.composite
def any_prices(draw: st.DrawFn) -> Price:
    model = draw(
        st.sampled_from(
            ["per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage"]
        )
    )
    if model in ("graduated", "volume", "graduated_percentage"):
        return draw(tiered_prices(model))
    params = draw(common_params())
    if model == "per_unit":
        return Price(model=model, unit_price=draw(money), **params)
    if model == "package":
        size = draw(decimals(1_000).filter(lambda d: d > 0))
        return Price(model=model, package_size=size, package_price=draw(money), **params)
    return Price(model=model, rate=draw(money), free_amount=draw(decimals(1_000)), **params)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """Sum without the default 28-digit rounding (a divide_by of 3 gives 20 decimal places)."""
    with localcontext(prec=200):
        return sum(values, D(0))


def breakdown_total(result: PriceResult) -> Decimal:
    return exact_sum(item.amount for item in result.breakdown)


@PROPERTY
@given(tiered_prices("graduated"), quantities, quantities)
def test_graduated_amount_never_decreases_as_quantity_grows(
    price: Price, a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    assert evaluate(price, low).amount <= evaluate(price, high).amount


@PROPERTY
@given(st.sampled_from(["graduated", "graduated_percentage"]).flatmap(tiered_prices), quantities)
def test_graduated_amount_equals_its_breakdown_sum(price: Price, quantity: Decimal) -> None:
    result = evaluate(price, quantity)
    assert result.amount == breakdown_total(result)
    tier_units = exact_sum(i.quantity for i in result.breakdown if i.kind == "tier")
    assert tier_units == result.billable_quantity


@PROPERTY
@given(tiered_prices("volume"), quantities)
def test_volume_amount_equals_its_breakdown_sum(price: Price, quantity: Decimal) -> None:
    result = evaluate(price, quantity)
    assert result.amount == breakdown_total(result)
    assert sum(1 for item in result.breakdown if item.kind == "tier") == 1


@PROPERTY
@given(any_prices(), quantities)
def test_every_model_amount_equals_its_breakdown_sum_and_respects_min_max(
    price: Price, quantity: Decimal
) -> None:
    result = evaluate(price, quantity)
    assert result.amount == breakdown_total(result)
    assert result.amount >= (price.minimum_amount or 0)
    if price.maximum_amount is not None:
        assert result.amount <= price.maximum_amount


@PROPERTY
@given(any_prices(), st.lists(decimals(5_000), max_size=12))
def test_incremental_charges_add_up_to_the_period_amount(
    price: Price, increases: list[Decimal]
) -> None:
    # given a running quantity that only grows, when each step is charged incrementally
    steps = [D(0), *accumulate(increases)]
    charges = [incremental_charge(price, a, b) for a, b in pairwise(steps)]
    # then the charges add up to the final amount minus the amount at zero usage
    with localcontext(prec=200):
        expected = evaluate(price, steps[-1]).amount - evaluate(price, D(0)).amount
    assert exact_sum(charges) == expected


@PROPERTY
@given(
    tier_lists(bound=st.integers(min_value=0, max_value=3_000).map(Decimal)),
    st.integers(min_value=0, max_value=3_000),
)
def test_graduated_matches_a_unit_by_unit_oracle(tiers: tuple[Tier, ...], quantity: int) -> None:
    # given integer tier bounds, unit k (1-based) falls in the first tier with k <= up_to
    price = Price(model="graduated", tiers=tiers)
    expected = tiers[0].flat_fee
    entered = {0}
    for unit in range(1, quantity + 1):
        index = next(i for i, t in enumerate(tiers) if t.up_to is None or unit <= t.up_to)
        expected += tiers[index].unit_price
        if index not in entered:
            entered.add(index)
            expected += tiers[index].flat_fee
    assert evaluate(price, D(quantity)).amount == expected


@PROPERTY
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=500), money)
def test_package_matches_integer_ceiling(quantity: int, size: int, package_price: Decimal) -> None:
    price = Price(model="package", package_size=D(size), package_price=package_price)
    assert evaluate(price, D(quantity)).amount == -(-quantity // size) * package_price


@PROPERTY
@given(money, st.lists(decimals(10_000), max_size=10))
def test_percentage_events_without_per_event_params_equal_the_rate_on_the_sum(
    rate: Decimal, events: list[Decimal]
) -> None:
    price = Price(model="percentage", rate=rate)
    by_events = evaluate(price, events=events).amount
    assert by_events == evaluate(price, sum(events, D(0))).amount


@PROPERTY
@given(
    money,
    decimals(10),
    st.lists(decimals(10_000), max_size=10),
    decimals(2_000),
    st.integers(min_value=0, max_value=3),
)
def test_percentage_events_respect_per_event_bounds(
    rate: Decimal, fixed: Decimal, events: list[Decimal], free_amount: Decimal, free: int
) -> None:
    price = Price(
        model="percentage",
        rate=rate,
        fixed_fee_per_event=fixed,
        min_per_event=D(1),
        max_per_event=D(50),
        free_amount=free_amount,
        free_events=free,
    )
    result = evaluate(price, events=events)
    assert result.amount == breakdown_total(result)
    assert 0 <= result.amount <= 50 * len(events)


@PROPERTY
@given(
    st.decimals(
        min_value=-(10**9), max_value=10**9, places=6, allow_nan=False, allow_infinity=False
    ),
    st.sampled_from(["USD", "JPY", "KWD", "XYZ"]),
)
def test_round_money_is_idempotent_and_within_half_a_minor_unit(
    amount: Decimal, currency: str
) -> None:
    rounded = round_money(amount, currency)
    places = {"JPY": 0, "KWD": 3}.get(currency, 2)
    assert round_money(rounded, currency) == rounded
    assert abs(rounded - amount) <= D(1).scaleb(-places) / 2
