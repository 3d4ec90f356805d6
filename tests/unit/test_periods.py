"""Unit tests for ``domain.periods`` (usage windows and billing periods)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.periods import (
    MAX_WINDOWS,
    Period,
    calendar_month,
    floor_to_window,
    period_at_index,
    period_containing,
    periods_between,
    windows,
)

US = timedelta(microseconds=1)
HOUR = timedelta(hours=1)
NEW_YORK = "America/New_York"
KOLKATA = "Asia/Kolkata"
KATHMANDU = "Asia/Kathmandu"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)


def assert_consecutive(result: list[tuple[datetime, datetime]], start: datetime, end: datetime):
    assert result[0][0] == start
    assert result[-1][1] == end
    for (_, previous_end), (next_start, _) in pairwise(result):
        assert previous_end == next_start
    assert all(a < b for a, b in result)


# --------------------------------------------------------------------------
# Usage windows: alignment in offset zones
# --------------------------------------------------------------------------


def test_kathmandu_hour_windows_start_at_quarter_past_utc():
    # given Asia/Kathmandu (+05:45) and a UTC range that is not hour-aligned locally
    start, end = utc(2026, 3, 1, 0, 0), utc(2026, 3, 1, 3, 0)

    # when
    result = windows(start, end, "HOUR", KATHMANDU)

    # then local hours start at :15 UTC; first and last windows are clipped
    assert result == [
        (utc(2026, 3, 1, 0, 0), utc(2026, 3, 1, 0, 15)),
        (utc(2026, 3, 1, 0, 15), utc(2026, 3, 1, 1, 15)),
        (utc(2026, 3, 1, 1, 15), utc(2026, 3, 1, 2, 15)),
        (utc(2026, 3, 1, 2, 15), utc(2026, 3, 1, 3, 0)),
    ]


def test_kathmandu_day_windows_start_at_local_midnight():
    # given two local days in Kathmandu, starting mid-day UTC
    start, end = utc(2026, 3, 1, 12, 0), utc(2026, 3, 3, 12, 0)

    # when
    result = windows(start, end, "DAY", KATHMANDU)

    # then local midnight is 18:15 UTC of the previous day
    assert result == [
        (utc(2026, 3, 1, 12, 0), utc(2026, 3, 1, 18, 15)),
        (utc(2026, 3, 1, 18, 15), utc(2026, 3, 2, 18, 15)),
        (utc(2026, 3, 2, 18, 15), utc(2026, 3, 3, 12, 0)),
    ]
    assert floor_to_window(utc(2026, 3, 2, 18, 14, 59, 999999), "DAY", KATHMANDU) == utc(
        2026, 3, 1, 18, 15
    )
    assert floor_to_window(utc(2026, 3, 2, 18, 15), "DAY", KATHMANDU) == utc(2026, 3, 2, 18, 15)


def test_kolkata_hour_and_minute_floors():
    # given Asia/Kolkata (+05:30)
    instant = utc(2026, 6, 1, 10, 29, 59, 999999)

    # when / then hours start at :30 UTC, minutes at :00 seconds
    assert floor_to_window(instant, "HOUR", KOLKATA) == utc(2026, 6, 1, 9, 30)
    assert floor_to_window(instant + US, "HOUR", KOLKATA) == utc(2026, 6, 1, 10, 30)
    assert floor_to_window(instant, "MINUTE", KOLKATA) == utc(2026, 6, 1, 10, 29)


def test_kolkata_month_windows():
    # given a range spanning several local months in Kolkata
    start, end = utc(2026, 1, 15), utc(2026, 4, 10)

    # when
    result = windows(start, end, "MONTH", KOLKATA)

    # then months start at local midnight on the 1st = 18:30 UTC the day before
    assert result == [
        (utc(2026, 1, 15), utc(2026, 1, 31, 18, 30)),
        (utc(2026, 1, 31, 18, 30), utc(2026, 2, 28, 18, 30)),
        (utc(2026, 2, 28, 18, 30), utc(2026, 3, 31, 18, 30)),
        (utc(2026, 3, 31, 18, 30), utc(2026, 4, 10)),
    ]


def test_windows_are_clipped_to_non_aligned_start_and_end():
    # given a UTC range starting and ending mid-hour
    start, end = utc(2026, 5, 4, 10, 17, 3, 5), utc(2026, 5, 4, 13, 42)

    # when
    result = windows(start, end, "HOUR")

    # then
    assert result == [
        (start, utc(2026, 5, 4, 11)),
        (utc(2026, 5, 4, 11), utc(2026, 5, 4, 12)),
        (utc(2026, 5, 4, 12), utc(2026, 5, 4, 13)),
        (utc(2026, 5, 4, 13), end),
    ]


def test_range_inside_a_single_window_yields_one_clipped_window():
    # given a range well inside one local day
    start, end = utc(2026, 5, 4, 10), utc(2026, 5, 4, 11)

    # when / then
    assert windows(start, end, "DAY", NEW_YORK) == [(start, end)]


def test_aligned_range_gives_exact_windows():
    # given a range exactly covering three local minutes
    start = utc(2026, 5, 4, 10, 0)

    # when
    result = windows(start, start + timedelta(minutes=3), "MINUTE", KATHMANDU)

    # then
    assert [b - a for a, b in result] == [timedelta(minutes=1)] * 3


def test_inputs_in_other_zones_are_accepted_and_results_are_utc():
    # given aware inputs in a non-UTC zone
    start = local(KOLKATA, 2026, 2, 1, 0, 0)
    end = local(KOLKATA, 2026, 2, 2, 0, 0)

    # when
    result = windows(start, end, "DAY", KOLKATA)

    # then
    assert result == [(utc(2026, 1, 31, 18, 30), utc(2026, 2, 1, 18, 30))]
    assert all(a.tzinfo is UTC and b.tzinfo is UTC for a, b in result)
    assert floor_to_window(start, "HOUR", KOLKATA).tzinfo is UTC


# --------------------------------------------------------------------------
# Usage windows: DST in America/New_York
# --------------------------------------------------------------------------


def test_spring_forward_day_is_23_hours():
    # given the local day 2026-03-08 in New York (clocks jump 02:00 -> 03:00)
    start = local(NEW_YORK, 2026, 3, 8)
    end = local(NEW_YORK, 2026, 3, 9)

    # when
    result = windows(start, end, "DAY", NEW_YORK)
    hours = windows(start, end, "HOUR", NEW_YORK)

    # then
    assert result == [(utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))]
    assert result[0][1] - result[0][0] == timedelta(hours=23)
    assert len(hours) == 23
    assert all(b - a == HOUR for a, b in hours)


def test_fall_back_day_is_25_hours():
    # given the local day 2026-11-01 in New York (01:00-02:00 happens twice)
    start = local(NEW_YORK, 2026, 11, 1)
    end = local(NEW_YORK, 2026, 11, 2)

    # when
    result = windows(start - timedelta(days=1), end + timedelta(days=1), "DAY", NEW_YORK)

    # then the middle window is that day, 25 hours long, between its neighbours of 24
    assert [b - a for a, b in result[1:-1]] == [timedelta(hours=25)]
    assert result[1] == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))


def test_fall_back_night_has_25_consecutive_hour_windows():
    # given the local day 2026-11-01 in New York
    start = local(NEW_YORK, 2026, 11, 1)
    end = local(NEW_YORK, 2026, 11, 2)

    # when
    result = windows(start, end, "HOUR", NEW_YORK)

    # then 25 one-hour, consecutive, non-overlapping windows
    assert len(result) == 25
    assert_consecutive(result, utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert all(b - a == HOUR for a, b in result)
    # and both passes of 01:00 get their own window
    zone = ZoneInfo(NEW_YORK)
    labels = [(a.astimezone(zone).hour, a.astimezone(zone).utcoffset()) for a, _ in result[:4]]
    assert labels == [
        (0, timedelta(hours=-4)),
        (1, timedelta(hours=-4)),
        (1, timedelta(hours=-5)),
        (2, timedelta(hours=-5)),
    ]


def test_floor_in_repeated_hour_uses_the_right_pass():
    # given an instant in the second 01:xx (EST) on the fall-back night
    second_pass = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    first_pass = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=0)

    # when / then
    assert floor_to_window(second_pass, "HOUR", NEW_YORK) == utc(2026, 11, 1, 6)
    assert floor_to_window(first_pass, "HOUR", NEW_YORK) == utc(2026, 11, 1, 5)
    assert floor_to_window(second_pass, "DAY", NEW_YORK) == utc(2026, 11, 1, 4)


def test_half_hour_dst_shift_never_straddles_an_offset_change():
    # given Australia/Lord_Howe, which falls back 30 minutes (02:00 +11 -> 01:30 +10:30)
    start, end = utc(2026, 4, 4, 13), utc(2026, 4, 4, 17)

    # when
    result = windows(start, end, "HOUR", "Australia/Lord_Howe")

    # then the offset change at 15:00 UTC is a boundary; windows stay consecutive
    assert result == [
        (utc(2026, 4, 4, 13), utc(2026, 4, 4, 14)),
        (utc(2026, 4, 4, 14), utc(2026, 4, 4, 15)),
        (utc(2026, 4, 4, 15), utc(2026, 4, 4, 15, 30)),
        (utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 16, 30)),
        (utc(2026, 4, 4, 16, 30), utc(2026, 4, 4, 17)),
    ]


# --------------------------------------------------------------------------
# Usage windows: validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["WEEK", "hour", "", "SECOND"])
def test_unknown_window_size_is_rejected(size: str):
    with pytest.raises(ValueError, match="window size"):
        windows(utc(2026, 1, 1), utc(2026, 1, 2), size)
    with pytest.raises(ValueError, match="window size"):
        floor_to_window(utc(2026, 1, 1), size)


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "../etc/passwd", "Not A Zone"])
def test_unknown_zone_is_rejected(tz: str):
    with pytest.raises(ValueError, match="time zone"):
        windows(utc(2026, 1, 1), utc(2026, 1, 2), "DAY", tz)
    with pytest.raises(ValueError, match="time zone"):
        calendar_month(utc(2026, 1, 1), tz)


def test_empty_or_reversed_range_is_rejected():
    with pytest.raises(ValueError, match="after start"):
        windows(utc(2026, 1, 1), utc(2026, 1, 1), "DAY")
    with pytest.raises(ValueError, match="after start"):
        windows(utc(2026, 1, 2), utc(2026, 1, 1), "DAY")


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        windows(datetime(2026, 1, 1), utc(2026, 1, 2), "DAY")
    with pytest.raises(ValueError, match="timezone-aware"):
        period_containing(datetime(2026, 1, 1), utc(2026, 1, 1), "month", "UTC")


def test_window_cap():
    # given exactly MAX_WINDOWS minutes, then one more
    start = utc(2026, 1, 1)
    limit = start + timedelta(minutes=MAX_WINDOWS)

    # when / then
    assert len(windows(start, limit, "MINUTE")) == MAX_WINDOWS
    with pytest.raises(ValueError, match="more than"):
        windows(start, limit + US, "MINUTE")
    with pytest.raises(ValueError, match="more than"):
        windows(start, start + timedelta(days=365 * 50), "MINUTE")


def test_month_windows_near_the_end_of_time_are_clipped():
    # given a range ending in the last representable month
    start, end = utc(9999, 11, 15), datetime.max.replace(tzinfo=UTC)

    # when
    result = windows(start, end, "MONTH")

    # then
    assert result == [(start, utc(9999, 12, 1)), (utc(9999, 12, 1), end)]


# --------------------------------------------------------------------------
# Billing periods
# --------------------------------------------------------------------------


def test_weekly_period_in_kolkata_is_exact_at_the_boundary():
    # given a weekly schedule anchored Monday 09:15 in Kolkata (03:45 UTC)
    anchor = local(KOLKATA, 2026, 1, 5, 9, 15)
    boundary = utc(2026, 1, 19, 3, 45)  # start of period 2

    # when
    before = period_containing(boundary - US, anchor, "week", KOLKATA)
    at = period_containing(boundary, anchor, "week", KOLKATA)

    # then one microsecond before belongs to period 1, the boundary to period 2
    assert before == Period(utc(2026, 1, 12, 3, 45), boundary)
    assert at == Period(boundary, utc(2026, 1, 26, 3, 45))
    assert at == period_at_index(anchor, "week", KOLKATA, 2)


def test_week_spanning_dst_change_is_167_or_169_hours():
    # given a weekly schedule anchored Sunday 12:00 in New York
    anchor = local(NEW_YORK, 2026, 3, 1, 12)

    # when
    spring = period_at_index(anchor, "week", NEW_YORK, 0)  # Mar 1 -> Mar 8
    fall = period_containing(utc(2026, 11, 1, 12), anchor, "week", NEW_YORK)

    # then
    assert fall.start == local(NEW_YORK, 2026, 10, 25, 12)
    assert spring.duration == timedelta(hours=167)
    assert fall.duration == timedelta(hours=169)


@pytest.mark.parametrize(
    ("year", "expected_days"),
    [
        (2027, [31, 28, 31, 30, 31]),  # non-leap February
        (2028, [31, 29, 31, 30, 31]),  # leap February
    ],
)
def test_monthly_anchor_on_31st_clamps_and_returns(year: int, expected_days: list[int]):
    # given a monthly schedule anchored Jan 31 10:00 UTC
    anchor = utc(year, 1, 31, 10)

    # when
    starts = [period_at_index(anchor, "month", "UTC", k).start for k in range(5)]

    # then Feb clamps to its last day and Mar 31 / May 31 are restored
    assert [s.day for s in starts] == expected_days
    assert [s.month for s in starts] == [1, 2, 3, 4, 5]
    assert all(s.hour == 10 for s in starts)


def test_monthly_anchor_on_31st_in_negative_direction():
    # given a monthly schedule anchored May 31
    anchor = utc(2026, 5, 31)

    # when
    previous = [period_at_index(anchor, "month", "UTC", k).start for k in (-1, -2, -3, -4)]

    # then
    assert previous == [utc(2026, 4, 30), utc(2026, 3, 31), utc(2026, 2, 28), utc(2026, 1, 31)]


def test_monthly_period_across_dst_is_not_whole_days():
    # given a monthly schedule anchored at 10:00 on the 15th in New York
    anchor = local(NEW_YORK, 2026, 2, 15, 10)

    # when
    spring = period_at_index(anchor, "month", NEW_YORK, 0)
    fall = period_at_index(anchor, "month", NEW_YORK, 8)

    # then the local wall time is kept, so the elapsed hours are not days * 24
    assert spring == Period(utc(2026, 2, 15, 15), utc(2026, 3, 15, 14))
    assert spring.duration == timedelta(days=28) - HOUR
    assert spring.duration.total_seconds() / 3600 % 24 != 0
    assert fall == Period(utc(2026, 10, 15, 14), utc(2026, 11, 15, 15))
    assert fall.duration == timedelta(days=31) + HOUR


def test_yearly_feb_29_anchor():
    # given a yearly schedule anchored on a leap day
    anchor = utc(2024, 2, 29, 12)

    # when
    starts = {k: period_at_index(anchor, "year", "UTC", k).start for k in (-1, 0, 1, 3, 4)}

    # then non-leap years use Feb 28, leap years Feb 29
    assert starts == {
        -1: utc(2023, 2, 28, 12),
        0: utc(2024, 2, 29, 12),
        1: utc(2025, 2, 28, 12),
        3: utc(2027, 2, 28, 12),
        4: utc(2028, 2, 29, 12),
    }
    assert period_containing(utc(2025, 2, 28, 11, 59), anchor, "year", "UTC").start == anchor


def test_nonexistent_local_start_resolves_forward():
    # given a monthly anchor at 02:30 on the 8th; 2026-03-08 02:30 does not exist in New York
    anchor = local(NEW_YORK, 2026, 2, 8, 2, 30)

    # when
    period = period_at_index(anchor, "month", NEW_YORK, 1)

    # then it starts at 03:30 EDT (shifted forward by the gap), then returns to 02:30
    assert period.start == utc(2026, 3, 8, 7, 30)
    assert period.start.astimezone(ZoneInfo(NEW_YORK)).hour == 3
    assert period.end == local(NEW_YORK, 2026, 4, 8, 2, 30)


def test_ambiguous_local_start_uses_first_occurrence():
    # given a monthly anchor at 01:30 on the 1st; 2026-11-01 01:30 happens twice in New York
    anchor = local(NEW_YORK, 2026, 10, 1, 1, 30)

    # when
    period = period_at_index(anchor, "month", NEW_YORK, 1)

    # then the first (EDT) occurrence is used
    assert period.start == utc(2026, 11, 1, 5, 30)


def test_period_zero_starts_exactly_at_an_anchor_in_a_repeated_hour():
    # given an anchor in the second pass of 01:30 (EST)
    anchor = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)

    # when
    period = period_at_index(anchor, "week", NEW_YORK, 0)

    # then
    assert period.start == utc(2026, 11, 1, 6, 30)
    assert period_containing(anchor, anchor, "week", NEW_YORK) == period


def test_period_containing_before_the_anchor_and_far_away():
    # given a weekly schedule anchored in 2026
    anchor = local(KOLKATA, 2026, 1, 5, 9, 15)

    # when
    before = period_containing(utc(2025, 12, 30), anchor, "week", KOLKATA)
    far = period_containing(utc(2426, 7, 1), anchor, "week", KOLKATA)

    # then
    assert before == period_at_index(anchor, "week", KOLKATA, -1)
    assert far.start <= utc(2426, 7, 1) < far.end
    assert far.duration == timedelta(weeks=1)


def test_periods_between_lists_every_overlapping_period():
    # given a monthly schedule anchored on the 10th
    anchor = utc(2026, 1, 10)

    # when the range starts mid-period and ends exactly on a period start
    result = periods_between(anchor, "month", "UTC", utc(2026, 2, 20), utc(2026, 5, 10))

    # then the period containing the start is included, the one starting at end is not
    assert [p.start for p in result] == [utc(2026, 2, 10), utc(2026, 3, 10), utc(2026, 4, 10)]
    assert result[-1].end == utc(2026, 5, 10)


def test_periods_between_validation():
    anchor = utc(2026, 1, 10)
    with pytest.raises(ValueError, match="after start"):
        periods_between(anchor, "month", "UTC", utc(2026, 2, 1), utc(2026, 2, 1))
    with pytest.raises(ValueError, match="interval"):
        periods_between(anchor, "day", "UTC", utc(2026, 2, 1), utc(2026, 3, 1))
    with pytest.raises(ValueError, match="more than"):
        periods_between(anchor, "week", "UTC", utc(1000, 1, 1), utc(9000, 1, 1))


@pytest.mark.parametrize("interval", ["weekly", "Month", "quarter", ""])
def test_unknown_interval_is_rejected(interval: str):
    with pytest.raises(ValueError, match="interval"):
        period_at_index(utc(2026, 1, 1), interval, "UTC", 0)


def test_calendar_month_at_last_microsecond_in_kolkata():
    # given the last microsecond of January 2026 in Kolkata (+05:30)
    last = local(KOLKATA, 2026, 1, 31, 23, 59, 59, 999999)

    # when
    january = calendar_month(last, KOLKATA)
    february = calendar_month(last + US, KOLKATA)

    # then
    assert last.astimezone(UTC) == utc(2026, 1, 31, 18, 29, 59, 999999)
    assert january == Period(utc(2025, 12, 31, 18, 30), utc(2026, 1, 31, 18, 30))
    assert february == Period(utc(2026, 1, 31, 18, 30), utc(2026, 2, 28, 18, 30))


def test_period_normalises_to_utc_and_rejects_empty():
    start = datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    period = Period(start, utc(2026, 1, 2))
    assert period.start == utc(2026, 1, 1) and period.start.tzinfo is UTC
    assert utc(2026, 1, 1) in period and utc(2026, 1, 2) not in period
    with pytest.raises(ValueError):
        Period(utc(2026, 1, 2), utc(2026, 1, 1))


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

ZONES = [
    "UTC",
    KOLKATA,
    KATHMANDU,
    NEW_YORK,
    "Europe/London",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "Asia/Tehran",
    "Pacific/Apia",
    "America/St_Johns",
]

instants = st.datetimes(
    min_value=datetime(1950, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(deadline=None, max_examples=300)
@given(
    instant=instants,
    anchor=instants,
    interval=st.sampled_from(["week", "month", "year"]),
    tz=st.sampled_from(ZONES),
)
def test_property_period_containing_contains_and_periods_abut(
    instant: datetime, anchor: datetime, interval: str, tz: str
):
    # when
    period = period_containing(instant, anchor, interval, tz)

    # then it contains the instant
    assert period.start <= instant < period.end
    # and its neighbours abut exactly
    following = period_containing(period.end, anchor, interval, tz)
    preceding = period_containing(period.start - US, anchor, interval, tz)
    assert following.start == period.end
    assert preceding.end == period.start
    assert period_containing(period.end - US, anchor, interval, tz) == period


@settings(deadline=None)
@given(
    anchor=instants,
    index=st.integers(min_value=-400, max_value=400),
    interval=st.sampled_from(["week", "month", "year"]),
    tz=st.sampled_from(ZONES),
)
def test_property_period_at_index_is_consistent(
    anchor: datetime, index: int, interval: str, tz: str
):
    # when
    period = period_at_index(anchor, interval, tz, index)
    following = period_at_index(anchor, interval, tz, index + 1)

    # then
    assert period.end == following.start
    assert period_containing(period.start, anchor, interval, tz) == period


_SPANS = {
    "MINUTE": timedelta(hours=6),
    "HOUR": timedelta(days=10),
    "DAY": timedelta(days=400),
    "MONTH": timedelta(days=3650),
}


@settings(deadline=None)
@given(
    start=instants,
    fraction=st.floats(min_value=1e-6, max_value=1.0),
    size=st.sampled_from(sorted(_SPANS)),
    tz=st.sampled_from(ZONES),
)
def test_property_windows_are_consecutive_and_aligned(
    start: datetime, fraction: float, size: str, tz: str
):
    # given
    end = start + max(_SPANS[size] * fraction, US)

    # when
    result = windows(start, end, size, tz)

    # then they tile [start, end) and every unclipped window is exactly one window
    assert_consecutive(result, start, end)
    for window_start, window_end in result[1:-1]:
        assert floor_to_window(window_start, size, tz) == window_start
        assert floor_to_window(window_end - US, size, tz) == window_start
        assert floor_to_window(window_end, size, tz) == window_end
