"""A line's quantity from the usage facts behind it, and each fact's exact share of it.

Pure. Facts come in log order (their position); the quantity is computed with
`domain.aggregation.Partial` exactly as meter queries do, and `contributions` answers one
value per fact that adds up to that quantity exactly:

- COUNT: 1 each; SUM: the fact's value;
- MAX / MIN / LAST: the deciding fact (the first in log order among ties) carries the
  quantity, the others 0;
- UNIQUE_COUNT: the first fact (log order) of each distinct value carries 1;
- AVG: value / n; WEIGHTED_SUM: value * (time the level held within the period) /
  period length, a fact before the period holding the whole period. Shares are exact to
  20 decimal places and the last fact with a value takes the remainder, so the sum is
  exact.

Facts without a usable value carry 0 (1 for COUNT; UNIQUE_COUNT looks at `uniq` only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from domain.aggregation import Partial

ZERO = Decimal(0)
ONE = Decimal(1)
_SHARE = Decimal("1E-20")
# Quantities use the default decimal context (as meter queries do), pinned here so a
# caller's thread context cannot change a billed number.
_QUANTITY = Context(prec=28, rounding=ROUND_HALF_EVEN)
_WIDE = Context(prec=100, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Fact:
    """One event as one meter counted it."""

    event_id: str
    occurred_us: int
    value: Decimal | None
    uniq: str | None
    position: int


def line_quantity(aggregation: str, facts: Sequence[Fact], start_us: int, end_us: int) -> Decimal:
    """The meter's number for these facts over [start, end).

    WEIGHTED_SUM: facts before `start_us` set the level the period begins with.
    Every other aggregation counts every fact given (late facts of earlier periods
    included), whatever its timestamp.
    """
    with localcontext(_QUANTITY):
        if aggregation == "WEIGHTED_SUM":
            level = sum(
                (f.value for f in facts if f.value is not None and f.occurred_us < start_us), ZERO
            )
            part = Partial()
            for f in facts:
                if f.occurred_us >= start_us:
                    part.add(f.value, f.occurred_us, f.uniq)
            return part.value("WEIGHTED_SUM", start_us, end_us, level) or ZERO
        part = Partial()
        for f in facts:
            part.add(f.value, f.occurred_us, f.uniq)
        value = part.value(aggregation)
        return ZERO if value is None else value


def contributions(
    aggregation: str, facts: Sequence[Fact], start_us: int, end_us: int
) -> list[Decimal]:
    """Each fact's share of `line_quantity(...)`, in the same order; they sum to it exactly."""
    quantity = line_quantity(aggregation, facts, start_us, end_us)
    if aggregation == "COUNT":
        return [ONE] * len(facts)
    if aggregation == "SUM":
        return [ZERO if f.value is None else f.value for f in facts]
    if aggregation == "UNIQUE_COUNT":
        seen: set[str] = set()
        shares = []
        for f in facts:
            first = f.uniq is not None and f.uniq not in seen
            if first:
                seen.add(f.uniq)  # type: ignore[arg-type]
            shares.append(ONE if first else ZERO)
        return shares
    if aggregation in ("MAX", "MIN", "LAST"):
        return _deciding(aggregation, facts, quantity)
    if aggregation == "AVG":
        usable = sum(1 for f in facts if f.value is not None)
        return _exact_shares(
            facts, quantity, lambda f: f.value / usable if f.value is not None else None
        )
    if aggregation == "WEIGHTED_SUM":
        length = Decimal(end_us - start_us)
        return _exact_shares(
            facts,
            quantity,
            lambda f: (
                None
                if f.value is None
                else f.value * (end_us - max(f.occurred_us, start_us)) / length
            ),
        )
    raise ValueError(f"unknown aggregation {aggregation}")


def _deciding(aggregation: str, facts: Sequence[Fact], quantity: Decimal) -> list[Decimal]:
    """The first fact (log order) that decides the quantity carries it, the rest 0."""
    shares = [ZERO] * len(facts)
    usable = [(i, f) for i, f in enumerate(facts) if f.value is not None]
    if not usable:
        return shares
    if aggregation == "LAST":
        latest = max(f.occurred_us for _, f in usable)
        index = next(i for i, f in usable if f.occurred_us == latest)
    else:
        index = next(i for i, f in usable if f.value == quantity)
    shares[index] = quantity
    return shares


def _exact_shares(facts: Sequence[Fact], quantity: Decimal, share_of) -> list[Decimal]:  # type: ignore[no-untyped-def]
    """Shares quantized to 1E-20; the last fact with a value takes the remainder."""
    shares: list[Decimal] = []
    last = None
    with localcontext(_WIDE):
        for index, f in enumerate(facts):
            raw = share_of(f)
            if raw is None:
                shares.append(ZERO)
                continue
            shares.append(raw.quantize(_SHARE))
            last = index
        if last is not None:
            shares[last] = quantity - (sum(shares, ZERO) - shares[last])
    return shares
