"""UTC calendar periods a budget resets on: day, ISO week (from Monday), month, or never (total)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["day", "week", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "total")
DEFAULT_PERIOD: Period = "month"


def bounds(period: str, now: float) -> tuple[float, float | None]:
    """(start, reset) of the period containing `now`, in epoch seconds; reset is None for `total`."""
    if period == "total":
        return 0.0, None
    t = datetime.fromtimestamp(now, UTC)
    day = datetime(t.year, t.month, t.day, tzinfo=UTC)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return start.timestamp(), end.timestamp()


def first_day(start: float) -> str:
    """The first `usage_daily.day` (YYYY-MM-DD) inside a period that starts at `start`."""
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")


def iso(ts: float | None) -> str | None:
    """A reset time as the admin API shows it (`2026-12-01T00:00:00Z`), None for never."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
