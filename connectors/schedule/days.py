"""The day rules of a cron expression (pure): for a year and month, the days of the month a
day-of-month or day-of-week field allows, ``L``, ``W``, ``LW``, ``#`` and ``L`` of a weekday
included, and how the two fields combine (AWS: one of them is ``?``; crontab: either)."""

from __future__ import annotations

import calendar
from collections.abc import Callable

DayRule = Callable[[int, int], list[int]]
"""``(year, month) -> sorted days of that month``."""


def all_days(year: int, month: int) -> list[int]:
    return list(range(1, calendar.monthrange(year, month)[1] + 1))


def dom_days(allowed: frozenset[int]) -> DayRule:
    def days(year: int, month: int) -> list[int]:
        last = calendar.monthrange(year, month)[1]
        return [d for d in sorted(allowed) if d <= last]

    return days


def last_day(year: int, month: int) -> list[int]:
    return [calendar.monthrange(year, month)[1]]


def nearest_weekday(year: int, month: int, day: int) -> int | None:
    """Quartz ``W``: the weekday (Mon-Fri) nearest ``day`` without leaving the month."""
    last = calendar.monthrange(year, month)[1]
    if day > last:
        return None
    wd = calendar.weekday(year, month, day)
    if wd < 5:
        return day
    if wd == 5:  # Saturday: the Friday before, unless that is in the previous month
        return day - 1 if day > 1 else day + 2
    return day + 1 if day < last else day - 2  # Sunday: the Monday after, or Friday before


def nearest_weekday_rule(day: int) -> DayRule:
    def days(year: int, month: int) -> list[int]:
        found = nearest_weekday(year, month, day)
        return [] if found is None else [found]

    return days


def last_weekday_of_month(year: int, month: int) -> list[int]:
    last = calendar.monthrange(year, month)[1]
    wd = calendar.weekday(year, month, last)
    return [last - max(0, wd - 4)]


def dow_days(weekdays: frozenset[int]) -> DayRule:
    """``weekdays`` in Python numbering (Monday = 0)."""

    def days(year: int, month: int) -> list[int]:
        first_wd, last = calendar.monthrange(year, month)
        return [d for d in range(1, last + 1) if (first_wd + d - 1) % 7 in weekdays]

    return days


def nth_weekday(weekday: int, nth: int) -> DayRule:
    def days(year: int, month: int) -> list[int]:
        first_wd, last = calendar.monthrange(year, month)
        day = 1 + (weekday - first_wd) % 7 + 7 * (nth - 1)
        return [day] if day <= last else []

    return days


def last_weekday(weekday: int) -> DayRule:
    def days(year: int, month: int) -> list[int]:
        last = calendar.monthrange(year, month)[1]
        return [last - (calendar.weekday(year, month, last) - weekday) % 7]

    return days


def intersection(a: DayRule, b: DayRule) -> DayRule:
    def days(year: int, month: int) -> list[int]:
        return sorted(set(a(year, month)) & set(b(year, month)))

    return days


def union(a: DayRule, b: DayRule) -> DayRule:
    def days(year: int, month: int) -> list[int]:
        return sorted(set(a(year, month)) | set(b(year, month)))

    return days
