"""Pure time arithmetic: usage windows and billing periods.

Everything here is deterministic and side-effect free: no I/O, no clock reads
(callers pass the instants they care about), no imports from the rest of the
project.

Conventions
-----------
* Every instant is a timezone-aware ``datetime``.  Inputs may be aware in any
  zone; results are always returned in UTC.  Naive datetimes are rejected with
  ``ValueError``.
* Intervals are half-open: ``[start, end)``.
* Calendar arithmetic (where a day, month or billing period begins) is done in
  local wall-clock time of an IANA zone and then converted to UTC.

Resolving local wall-clock times that do not map to exactly one instant
-----------------------------------------------------------------------
A local time is turned into an instant with ``local.replace(tzinfo=zone)``
(``fold=0``) followed by ``.astimezone(UTC)``.  Consequently:

* **Nonexistent** times (inside a spring-forward gap) resolve *forward* by the
  length of the gap: in America/New_York ``2026-03-08 02:30`` becomes
  ``03:30 EDT`` (07:30 UTC).  A gap that starts exactly at the requested time
  (e.g. a zone switching at local midnight) therefore resolves to the instant of
  the transition itself.
* **Ambiguous** times (inside a fall-back overlap) resolve to the *first*
  occurrence: in America/New_York ``2026-11-01 01:30`` becomes ``01:30 EDT``
  (05:30 UTC).

This rule places DAY / MONTH window boundaries (local midnights) and billing
period starts.  Two deliberate exceptions keep results intuitive:

* MINUTE / HOUR windows are derived from the local time *of each instant*, not
  by resolving wall-clock times, so both passes of a repeated hour get their
  own window (a fall-back day in New York has 25 HOUR windows) and no window
  is ever longer than a minute / an hour.  Where a UTC-offset change does not
  fall on a local minute / hour start (e.g. Australia/Lord_Howe's 30-minute DST
  shift, historical LMT offsets), the change itself is an extra boundary, so
  a MINUTE / HOUR window never straddles an offset change.
* Billing period 0 starts exactly at the anchor, even when the anchor is the
  second occurrence of an ambiguous local time; other periods follow the
  ``fold=0`` rule above.

Dates near ``datetime.min`` / ``datetime.max`` may raise ``OverflowError``.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "INTERVALS",
    "MAX_WINDOWS",
    "WINDOW_SIZES",
    "Period",
    "calendar_month",
    "floor_to_window",
    "period_at_index",
    "period_containing",
    "periods_between",
    "windows",
]

MINUTE = "MINUTE"
HOUR = "HOUR"
DAY = "DAY"
MONTH = "MONTH"
WINDOW_SIZES: frozenset[str] = frozenset({MINUTE, HOUR, DAY, MONTH})

WEEK_INTERVAL = "week"
MONTH_INTERVAL = "month"
YEAR_INTERVAL = "year"
INTERVALS: frozenset[str] = frozenset({WEEK_INTERVAL, MONTH_INTERVAL, YEAR_INTERVAL})

MAX_WINDOWS = 100_000
"""Upper bound on the number of windows / periods a single call may produce."""

# Nominal lengths, used only for cheap up-front size estimates and as UTC steps
# for MINUTE / HOUR iteration.
_NOMINAL: dict[str, timedelta] = {
    MINUTE: timedelta(minutes=1),
    HOUR: timedelta(hours=1),
    DAY: timedelta(days=1),
    MONTH: timedelta(days=28),
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    """Load an IANA zone, turning every lookup failure into ``ValueError``."""
    if not isinstance(tz, str) or not tz:
        raise ValueError(f"time zone must be a non-empty IANA name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def _utc(instant: datetime, name: str = "instant") -> datetime:
    """Return ``instant`` converted to UTC; reject naive datetimes."""
    if not isinstance(instant, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(instant).__name__}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {instant!r}")
    return instant.astimezone(UTC)


def _resolve(wall: datetime, zone: ZoneInfo) -> datetime:
    """Turn a naive local wall-clock time into a UTC instant (fold=0 rules)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _check_size(size: str) -> str:
    if size not in WINDOW_SIZES:
        raise ValueError(f"unknown window size {size!r}; expected one of {sorted(WINDOW_SIZES)}")
    return size


def _check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {sorted(INTERVALS)}")
    return interval


def _days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    """``(year, month)`` shifted by ``months`` (may be negative)."""
    y, m0 = divmod(year * 12 + (month - 1) + months, 12)
    return y, m0 + 1


# --------------------------------------------------------------------------
# Usage windows
# --------------------------------------------------------------------------


def _offset(instant_utc: datetime, zone: ZoneInfo) -> timedelta | None:
    return instant_utc.astimezone(zone).utcoffset()


def _offset_change(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """First instant in ``(before, after]`` whose UTC offset differs from ``before``'s.

    Bisection to the microsecond; the caller guarantees the offsets at
    ``before`` and ``after`` differ.  Only runs near a transition.
    """
    old = _offset(before, zone)
    resolution = timedelta(microseconds=1)
    while after - before > resolution:
        middle = before + (after - before) // 2
        if _offset(middle, zone) == old:
            before = middle
        else:
            after = middle
    return after


def _into_unit(local: datetime, size: str) -> timedelta:
    """Wall-clock time elapsed since the start of the local minute / hour."""
    elapsed = timedelta(seconds=local.second, microseconds=local.microsecond)
    return elapsed + timedelta(minutes=local.minute) if size == HOUR else elapsed


def _calendar_start(day: date, size: str, shift: int, zone: ZoneInfo) -> datetime:
    """UTC start of the local day / month containing ``day``, shifted ``shift`` units."""
    if size == DAY:
        first = day + timedelta(days=shift)
    else:  # MONTH
        year, month = _add_months(day.year, day.month, shift)
        first = date(year, month, 1)
    return _resolve(datetime.combine(first, time()), zone)


def _floor(instant_utc: datetime, size: str, zone: ZoneInfo) -> datetime:
    """Latest window boundary at or before ``instant_utc``.

    MINUTE / HOUR: step back, in real time, by the wall-clock time elapsed in the
    current local minute / hour.  If the UTC offset changed within that span,
    the change itself is the boundary, so a window never straddles an offset
    change (this matters only for transitions that are not on a whole local
    minute / hour, e.g. Australia/Lord_Howe's 30-minute shift).

    DAY / MONTH: local midnight of the (first) day resolved with the fold=0
    rules; neighbouring units are consulted because a gap can push a midnight
    forward past the instant and a fall-back can repeat the previous evening.
    """
    local = instant_utc.astimezone(zone)
    if size in (MINUTE, HOUR):
        candidate = instant_utc - _into_unit(local, size)
        if _offset(candidate, zone) != local.utcoffset():
            return _offset_change(candidate, instant_utc, zone)
        return candidate
    day = local.date()
    candidate = _calendar_start(day, size, 0, zone)
    if candidate > instant_utc:
        return _calendar_start(day, size, -1, zone)
    following = _calendar_start(day, size, 1, zone)
    return following if following <= instant_utc else candidate


def _next_boundary(boundary: datetime, size: str, zone: ZoneInfo) -> datetime:
    """The first window boundary strictly after ``boundary`` (itself a boundary)."""
    local = boundary.astimezone(zone)
    if size in (MINUTE, HOUR):
        candidate = boundary + (_NOMINAL[size] - _into_unit(local, size))
        if _offset(candidate, zone) != local.utcoffset():
            return _offset_change(boundary, candidate, zone)
        return candidate
    shift = 1
    candidate = _calendar_start(local.date(), size, shift, zone)
    while candidate <= boundary:
        shift += 1
        candidate = _calendar_start(local.date(), size, shift, zone)
    return candidate


def floor_to_window(instant: datetime, size: str, tz: str = "UTC") -> datetime:
    """Return the start (UTC) of the ``size`` window in zone ``tz`` containing ``instant``.

    MINUTE / HOUR windows start at local wall-clock minute / hour starts (an
    Asia/Kathmandu hour starts at hh:15 UTC; in a repeated fall-back hour the
    instant's own pass is used); DAY windows at local midnight; MONTH windows at
    local midnight on the first of the month (see the module docstring for
    midnights that fall in a DST gap or overlap).

    Raises ``ValueError`` for an unknown size or zone, or a naive ``instant``.
    """
    _check_size(size)
    return _floor(_utc(instant), size, _zone(tz))


def windows(
    start: datetime, end: datetime, size: str, tz: str = "UTC"
) -> list[tuple[datetime, datetime]]:
    """Split ``[start, end)`` into consecutive ``[window_start, window_end)`` pairs (UTC).

    Window boundaries are aligned as in :func:`floor_to_window`.  The first and
    last windows are clipped to ``[start, end)``, so the result always begins at
    ``start`` and finishes at ``end``, and each window's end is the next one's
    start.  DAY windows are 23 or 25 hours long on DST change days; on a
    fall-back night the repeated hour yields two separate HOUR windows.

    Raises ``ValueError`` for an unknown size or zone, naive inputs,
    ``end <= start``, or when more than :data:`MAX_WINDOWS` windows would be
    produced.
    """
    _check_size(size)
    zone = _zone(tz)
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    if end_utc <= start_utc:
        raise ValueError(f"end ({end_utc}) must be after start ({start_utc})")
    # Cheap early rejection; actual window lengths never average more than
    # twice their nominal length, so this cannot reject a legitimate request.
    if (end_utc - start_utc) / _NOMINAL[size] > 2 * MAX_WINDOWS:
        raise ValueError(f"more than {MAX_WINDOWS} {size} windows requested")

    result: list[tuple[datetime, datetime]] = []
    lower = start_utc
    boundary = _floor(start_utc, size, zone)
    while lower < end_utc:
        if len(result) >= MAX_WINDOWS:
            raise ValueError(f"more than {MAX_WINDOWS} {size} windows requested")
        try:
            boundary = _next_boundary(boundary, size, zone)
        except (OverflowError, ValueError):  # beyond datetime.max
            boundary = end_utc
        upper = min(boundary, end_utc)
        result.append((lower, upper))
        lower = upper
    return result


# --------------------------------------------------------------------------
# Billing periods
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A half-open billing period ``[start, end)``; both ends are UTC instants."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start, end = _utc(self.start, "start"), _utc(self.end, "end")
        if end <= start:
            raise ValueError(f"period end ({end}) must be after start ({start})")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    def __contains__(self, instant: object) -> bool:
        """``instant in period`` — true when ``start <= instant < end``."""
        if not isinstance(instant, datetime):
            return False
        return self.start <= _utc(instant) < self.end

    @property
    def duration(self) -> timedelta:
        """Elapsed (absolute) time between start and end."""
        return self.end - self.start


class _Schedule:
    """Start instants of the billing periods defined by an anchor."""

    def __init__(self, anchor: datetime, interval: str, tz: str) -> None:
        _check_interval(interval)
        self.interval = interval
        self.zone = _zone(tz)
        self.anchor_utc = _utc(anchor, "anchor")
        # Naive local wall-clock time of the anchor: the arithmetic base.
        self.anchor_wall = self.anchor_utc.astimezone(self.zone).replace(tzinfo=None, fold=0)

    def wall_start(self, index: int) -> datetime:
        """Naive local wall-clock start of period ``index``."""
        a = self.anchor_wall
        if self.interval == WEEK_INTERVAL:
            return a + timedelta(weeks=index)
        if self.interval == MONTH_INTERVAL:
            year, month = _add_months(a.year, a.month, index)
        else:  # year
            year, month = a.year + index, a.month
        return a.replace(year=year, month=month, day=min(a.day, _days_in_month(year, month)))

    def start(self, index: int) -> datetime:
        """UTC start of period ``index`` (always computed from the anchor)."""
        if index == 0:
            return self.anchor_utc
        return _resolve(self.wall_start(index), self.zone)

    def period(self, index: int) -> Period:
        return Period(self.start(index), self.start(index + 1))

    def estimate_index(self, instant_utc: datetime) -> int:
        """An index within a step or two of the period containing ``instant_utc``."""
        wall = instant_utc.astimezone(self.zone).replace(tzinfo=None)
        a = self.anchor_wall
        if self.interval == WEEK_INTERVAL:
            return (wall - a) // timedelta(weeks=1)
        if self.interval == MONTH_INTERVAL:
            return (wall.year - a.year) * 12 + (wall.month - a.month)
        return wall.year - a.year

    def index_containing(self, instant_utc: datetime) -> int:
        index = self.estimate_index(instant_utc)
        while self.start(index) > instant_utc:
            index -= 1
        while self.start(index + 1) <= instant_utc:
            index += 1
        return index


def _check_index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    return index


def period_at_index(anchor: datetime, interval: str, tz: str, index: int) -> Period:
    """Return billing period number ``index`` of the schedule defined by ``anchor``.

    Period ``k`` starts at the anchor's local wall-clock time in zone ``tz``
    shifted by ``k`` intervals (``"week"``: 7 local days; ``"month"``: same day
    of month, clamped to the month's last day; ``"year"``: same month and day,
    Feb 29 clamped to Feb 28) and ends where period ``k + 1`` starts.  Each start
    is computed from the anchor directly, so a Jan 31 anchor gives Feb 28 and
    then Mar 31 again.  ``index`` may be negative (periods before the anchor);
    period 0 starts exactly at ``anchor``.

    Raises ``ValueError`` for an unknown interval or zone, or a naive anchor.
    """
    return _Schedule(anchor, interval, tz).period(_check_index(index))


def period_containing(instant: datetime, anchor: datetime, interval: str, tz: str) -> Period:
    """Return the billing period (see :func:`period_at_index`) containing ``instant``.

    Works for instants before the anchor too.  Boundaries are exact: an instant
    equal to a period start belongs to that period.  Runs in constant time: the
    index is estimated from the local calendar distance, then corrected.
    """
    schedule = _Schedule(anchor, interval, tz)
    return schedule.period(schedule.index_containing(_utc(instant)))


def periods_between(
    anchor: datetime, interval: str, tz: str, start: datetime, end: datetime
) -> list[Period]:
    """Return, in order, every billing period overlapping ``[start, end)``.

    The first period contains ``start`` and the last contains the instant just
    before ``end``; periods are not clipped.  Raises ``ValueError`` if
    ``end <= start`` or if more than :data:`MAX_WINDOWS` periods would result.
    """
    schedule = _Schedule(anchor, interval, tz)
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    if end_utc <= start_utc:
        raise ValueError(f"end ({end_utc}) must be after start ({start_utc})")
    first = schedule.index_containing(start_utc)
    last = schedule.index_containing(end_utc - timedelta(microseconds=1))
    if last - first + 1 > MAX_WINDOWS:
        raise ValueError(f"more than {MAX_WINDOWS} periods requested")
    return [schedule.period(k) for k in range(first, last + 1)]


def calendar_month(instant: datetime, tz: str) -> Period:
    """Return the calendar month containing ``instant`` in zone ``tz`` (UTC bounds).

    The month runs from local midnight on the 1st to local midnight on the 1st
    of the following month.
    """
    zone = _zone(tz)
    start = _floor(_utc(instant), MONTH, zone)
    return Period(start, _next_boundary(start, MONTH, zone))
