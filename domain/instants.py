"""Instants as microseconds since the epoch: exact, and sortable in any database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def to_us(instant: datetime) -> int:
    """Microseconds since the epoch of an aware instant (exact)."""
    return (instant - EPOCH) // ONE_US


def from_us(us: int) -> datetime:
    """The UTC instant `us` microseconds after the epoch."""
    return EPOCH + us * ONE_US
