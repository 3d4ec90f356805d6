"""Line traces (domain/trace.py): each event's contribution adds up to the quantity exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.trace import Fact, contributions, line_quantity

D = Decimal
START, END = 1_000, 2_000


def facts(*rows: tuple[int, str | None, str | None]) -> list[Fact]:
    """(occurred_us, value, uniq) in log order."""
    return [
        Fact(f"e{i}", at, None if value is None else D(value), uniq, i)
        for i, (at, value, uniq) in enumerate(rows)
    ]


SAMPLE = facts(
    (1500, "3", "a"), (1200, "7", "b"), (1900, None, "a"), (1100, "7", "c"), (1900, "2", None)
)


@pytest.mark.parametrize(
    ("aggregation", "quantity", "shares"),
    [
        ("COUNT", "5", ["1", "1", "1", "1", "1"]),
        ("SUM", "19", ["3", "7", "0", "7", "2"]),
        ("MAX", "7", ["0", "7", "0", "0", "0"]),  # the first of the tied maxima
        ("MIN", "2", ["0", "0", "0", "0", "2"]),
        ("LAST", "2", ["0", "0", "0", "0", "2"]),  # latest usable timestamp
        ("UNIQUE_COUNT", "3", ["1", "1", "0", "1", "0"]),
    ],
)
def test_contributions_follow_the_deciding_event_rule(
    aggregation: str, quantity: str, shares: list[str]
) -> None:
    assert line_quantity(aggregation, SAMPLE, START, END) == D(quantity)
    assert contributions(aggregation, SAMPLE, START, END) == [D(s) for s in shares]


def test_average_shares_are_exact_with_the_remainder_on_the_last_event() -> None:
    three = facts((1100, "1", None), (1200, "1", None), (1300, "1", None), (1400, None, None))
    quantity = line_quantity("AVG", three, START, END)
    shares = contributions("AVG", three, START, END)
    assert quantity == 1
    assert sum(shares) == quantity
    assert shares[3] == 0 and shares[0] == D("0.33333333333333333333")


def test_weighted_sum_counts_earlier_levels_for_the_whole_period() -> None:
    rows = facts((500, "10", None), (1500, "4", None), (1750, "-2", None))
    # level 10 all period, +4 for half, -2 for a quarter: 10 + 2 - 0.5
    assert line_quantity("WEIGHTED_SUM", rows, START, END) == D("11.5")
    assert contributions("WEIGHTED_SUM", rows, START, END) == [D(10), D(2), D("-0.5")]


values = st.one_of(
    st.none(),
    st.decimals(min_value=-1000, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
)
rows = st.lists(
    st.tuples(st.integers(0, END - 1), values, st.sampled_from([None, "a", "b", "c", "d"])),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    rows=rows,
    aggregation=st.sampled_from(
        ["COUNT", "SUM", "MAX", "MIN", "LAST", "AVG", "UNIQUE_COUNT", "WEIGHTED_SUM"]
    ),
)
def test_contributions_always_sum_exactly_to_the_quantity(
    rows: list[tuple[int, Decimal | None, str | None]], aggregation: str
) -> None:
    given_facts = [Fact(f"e{i}", at, v, u, i) for i, (at, v, u) in enumerate(rows)]
    if aggregation != "WEIGHTED_SUM":  # other meters count only the period's facts
        given_facts = [f for f in given_facts if f.occurred_us >= START]
    shares = contributions(aggregation, given_facts, START, END)
    assert len(shares) == len(given_facts)
    assert sum(shares, D(0)) == line_quantity(aggregation, given_facts, START, END)
