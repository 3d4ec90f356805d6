"""Meter aggregation over partial sums, so windows can be built from stored buckets.

A `Partial` summarises some events of one meter, customer and group. Partials of
disjoint sets of events merge exactly; `value()` turns a merged partial into the
meter's number. MAX, LAST, AVG and UNIQUE_COUNT are computed from merged partials,
never by adding finished window values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal

ZERO = Decimal(0)
# Sums must be exact whatever the caller's decimal context: 28 significant digits (the
# default) would round a sum of large values. Divisions (AVG) use the default context.
EXACT = Context(prec=200)


@dataclass
class Partial:
    """Running summary of a set of events: counts, sums, extremes, last, distinct values."""

    events: int = 0
    n: int = 0  # events with a usable value
    total: Decimal = ZERO
    low: Decimal | None = None
    high: Decimal | None = None
    last_us: int | None = None
    last_value: Decimal | None = None
    sum_vt: Decimal = ZERO  # sum of value * timestamp (microseconds), for WEIGHTED_SUM
    values: set[str] = field(default_factory=set)

    def add(self, value: Decimal | None, at_us: int, unique: str | None) -> None:
        """Count one event."""
        self.events += 1
        if unique is not None:
            self.values.add(unique)
        if value is not None:
            self.add_value(value, at_us)

    def add_value(self, value: Decimal, at_us: int) -> None:
        """Count a usable value (the event itself is counted by the caller)."""
        self.n += 1
        self.total = EXACT.add(self.total, value)
        self.sum_vt = EXACT.add(self.sum_vt, EXACT.multiply(value, at_us))
        self.low = value if self.low is None or value < self.low else self.low
        self.high = value if self.high is None or value > self.high else self.high
        # Ties on timestamp keep the first event seen: events arrive in log order.
        if self.last_us is None or at_us > self.last_us:
            self.last_us, self.last_value = at_us, value

    def merge(self, other: Partial) -> None:
        """Fold another partial (of a disjoint set of events) into this one."""
        self.events += other.events
        self.n += other.n
        self.total = EXACT.add(self.total, other.total)
        self.sum_vt = EXACT.add(self.sum_vt, other.sum_vt)
        self.values |= other.values
        if other.low is not None and (self.low is None or other.low < self.low):
            self.low = other.low
        if other.high is not None and (self.high is None or other.high > self.high):
            self.high = other.high
        if other.last_us is not None and (self.last_us is None or other.last_us > self.last_us):
            self.last_us, self.last_value = other.last_us, other.last_value

    def value(
        self, aggregation: str, start_us: int = 0, end_us: int = 0, level_before: Decimal = ZERO
    ) -> Decimal | None:
        """The meter's number for these events (None: nothing to report)."""
        if aggregation == "COUNT":
            return Decimal(self.events)
        if aggregation == "SUM":
            return self.total
        if aggregation == "UNIQUE_COUNT":
            return Decimal(len(self.values))
        if aggregation == "WEIGHTED_SUM":
            return weighted_level(self, start_us, end_us, level_before)
        if self.n == 0:
            return None
        if aggregation == "MAX":
            return self.high
        if aggregation == "MIN":
            return self.low
        if aggregation == "LAST":
            return self.last_value
        if aggregation == "AVG":
            return self.total / self.n
        raise ValueError(f"unknown aggregation {aggregation}")


def weighted_level(part: Partial, start_us: int, end_us: int, level_before: Decimal) -> Decimal:
    """Average level over [start, end): each value changes the level from its instant on.

    The level integrated over the window is level_before * length plus, for each
    change v at t, v * (end - t); dividing by the length gives level-periods
    (e.g. GB-months when the window is the billing month).
    """
    length = end_us - start_us
    if length <= 0:
        return ZERO
    integral = EXACT.subtract(
        EXACT.add(EXACT.multiply(level_before, length), EXACT.multiply(part.total, end_us)),
        part.sum_vt,
    )
    return integral / length
