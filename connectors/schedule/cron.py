"""Schedule expressions: AWS ``cron(...)``, ``rate(...)``, ``at(...)`` and 5-field crontab.

Pure: no I/O, no clock. :func:`parse_schedule` validates an expression once; the resulting
:class:`Schedule` answers "when is the next fire after this instant, in this time zone".

Semantics follow Amazon EventBridge Scheduler:

* ``cron(min hour day-of-month month day-of-week year)``: exactly one of day-of-month and
  day-of-week is ``?``; day-of-week 1-7 is SUN-SAT; ``L`` (last day of the month, or
  ``nL`` the last weekday n of the month), ``W`` (``15W`` the weekday nearest the 15th, never
  crossing into another month; ``LW`` the last weekday), ``#`` (``3#2`` the second Tuesday);
  years 1970-2199.
* ``rate(N unit)``: a fixed duration (minute(s), hour(s), day(s); singular for N = 1, plural
  otherwise, as AWS requires). A day is 24 hours of elapsed time, whatever DST does.
  Fires are aligned to an anchor: the schedule's start date, or the Unix epoch.
* ``at(yyyy-mm-ddThh:mm:ss)``: one fire at that wall-clock time.
* A plain 5-field crontab (``*/5 * * * *``) with the Vixie cron rules: day-of-week 0-7
  (0 and 7 are Sunday), and when both day-of-month and day-of-week are restricted a day
  matching either fires. ``@hourly``, ``@daily`` and friends are accepted.

Daylight saving time (what AWS documents for Scheduler): a wall-clock time skipped by the
spring-forward change does not fire that day; a time repeated by the fall-back change fires
once, at its first occurrence. The one-time ``at()`` is the exception: a skipped wall time
fires at the same offset from midnight as before the change (02:30 on a day that jumps from
02:00 to 03:00 fires at 03:30), so a one-time schedule is never lost.

Why not APScheduler's ``CronTrigger`` directly: its day-of-week numbering, its handling of
non-existent local times and the missing ``W`` / ``LW`` / year bound differ from AWS. The
evaluator below walks calendar days and resolves each wall time explicitly; the tests check
it against ``CronTrigger`` on the expressions both understand.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from connectors.schedule.days import (
    DayRule,
    all_days,
    dom_days,
    dow_days,
    intersection,
    last_day,
    last_weekday,
    last_weekday_of_month,
    nearest_weekday_rule,
    nth_weekday,
    union,
)

__all__ = [
    "AtSchedule",
    "CronSchedule",
    "RateSchedule",
    "Schedule",
    "ScheduleExpressionError",
    "parse_schedule",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AWS_YEAR_MIN, AWS_YEAR_MAX = 1970, 2199
# The Gregorian calendar (weekdays included) repeats every 400 years: a crontab that has not
# matched within that span never will (e.g. ``0 0 30 2 *``).
CRONTAB_SEARCH_YEARS = 400
# Daylight-saving shifts are at most two hours; a wall time more than this before ``after``
# cannot resolve to an instant after it.
_DST_MARGIN = timedelta(hours=3)

MONTH_NAMES = {
    name: i
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
AWS_DOW_NAMES = {
    name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)
}
CRONTAB_DOW_NAMES = {name: i - 1 for name, i in AWS_DOW_NAMES.items()}

CRONTAB_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class ScheduleExpressionError(ValueError):
    """A schedule expression is malformed; the message quotes it and names the bad field."""

    def __init__(self, expression: str, message: str) -> None:
        self.expression = expression
        self.reason = message
        super().__init__(f"{expression}: {message}")


class Schedule(ABC):
    """A parsed schedule expression."""

    expression: str

    @abstractmethod
    def next_fire(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        """The first fire strictly after the aware instant ``after``, as an aware datetime in
        ``tz``; None when the schedule has no more fires."""

    def fires_between(self, start: datetime, end: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Fires ``t`` with ``start < t <= end``, oldest first."""
        end_utc = end.astimezone(UTC)
        t: datetime | None = start
        while t is not None:
            t = self.next_fire(t, tz)
            if t is None or t.astimezone(UTC) > end_utc:
                return
            yield t


def _require_aware(after: datetime) -> datetime:
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("next_fire needs an aware datetime")
    return after.astimezone(UTC)


# --------------------------------------------------------------------------- cron evaluation

"""(year, month) -> the matching days of that month, ascending."""


@dataclass(frozen=True, slots=True)
class CronSchedule(Schedule):
    """A calendar schedule (AWS ``cron(...)`` or a crontab line)."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    days: DayRule = field(repr=False, compare=False)
    years: frozenset[int] | None = None
    """None: every year (crontab); AWS cron always has a (bounded) set."""

    def next_fire(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        after_utc = _require_aware(after)
        floor = after_utc.astimezone(tz).replace(tzinfo=None) - _DST_MARGIN
        floor_date = floor.date()
        if self.years is None:
            last_year = floor.year + CRONTAB_SEARCH_YEARS
        else:
            last_year = max(self.years, default=0)
        year, month = floor.year, floor.month
        while year <= last_year:
            if self.years is not None and year not in self.years:
                year, month = year + 1, 1
                continue
            if month in self.months:
                for day in self.days(year, month):
                    if date(year, month, day) < floor_date:
                        continue
                    found = self._first_on_day(year, month, day, floor, after_utc, tz)
                    if found is not None:
                        return found
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return None

    def _first_on_day(
        self,
        year: int,
        month: int,
        day: int,
        floor: datetime,
        after_utc: datetime,
        tz: ZoneInfo,
    ) -> datetime | None:
        for hour in self.hours:
            for minute in self.minutes:
                wall = datetime(year, month, day, hour, minute)  # noqa: DTZ001 - wall time
                if wall < floor:
                    continue
                # fold=0: a repeated (fall-back) wall time resolves to its first occurrence.
                instant = wall.replace(tzinfo=tz).astimezone(UTC)
                if instant <= after_utc:
                    continue
                local = instant.astimezone(tz)
                if local.replace(tzinfo=None) != wall:
                    continue  # skipped by spring-forward: AWS does not fire it
                return local
        return None


@dataclass(frozen=True, slots=True)
class RateSchedule(Schedule):
    """``rate(N unit)``: every ``interval`` of elapsed time from ``anchor``."""

    expression: str
    interval: timedelta
    anchor: datetime = EPOCH

    def with_anchor(self, anchor: datetime) -> RateSchedule:
        _require_aware(anchor)
        return RateSchedule(self.expression, self.interval, anchor.astimezone(UTC))

    def next_fire(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        after_utc = _require_aware(after)
        if after_utc < self.anchor:
            return self.anchor.astimezone(tz)
        steps = (after_utc - self.anchor) // self.interval + 1
        return (self.anchor + steps * self.interval).astimezone(tz)


@dataclass(frozen=True, slots=True)
class AtSchedule(Schedule):
    """``at(yyyy-mm-ddThh:mm:ss)``: one fire at that wall time in the schedule's zone."""

    expression: str
    wall: datetime
    """Naive wall-clock time."""

    def next_fire(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        after_utc = _require_aware(after)
        instant = self.wall.replace(tzinfo=tz).astimezone(UTC)
        return instant.astimezone(tz) if instant > after_utc else None


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    position: int
    low: int
    high: int
    names: dict[str, int] | None = None
    wrap: bool = False
    """Descending ranges wrap around (AWS day-of-week: FRI-MON)."""


_AWS_FIELDS = (
    _Field("minutes", 1, 0, 59),
    _Field("hours", 2, 0, 23),
    _Field("day-of-month", 3, 1, 31),
    _Field("month", 4, 1, 12, MONTH_NAMES),
    _Field("day-of-week", 5, 1, 7, AWS_DOW_NAMES, wrap=True),
    _Field("year", 6, AWS_YEAR_MIN, AWS_YEAR_MAX),
)
_CRONTAB_FIELDS = (
    _Field("minute", 1, 0, 59),
    _Field("hour", 2, 0, 23),
    _Field("day-of-month", 3, 1, 31),
    _Field("month", 4, 1, 12, MONTH_NAMES),
    _Field("day-of-week", 5, 0, 7, CRONTAB_DOW_NAMES),
)


class _FieldError(Exception):
    pass


def _value(text: str, spec: _Field) -> int:
    upper = text.upper()
    if spec.names and upper in spec.names:
        return spec.names[upper]
    if not text.isdigit():
        allowed = f"{spec.low}-{spec.high}"
        if spec.names:
            allowed += " or " + "-".join((next(iter(spec.names)), list(spec.names)[-1]))
        raise _FieldError(f"{text!r} is not a value ({allowed})")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise _FieldError(f"value {value} out of range {spec.low}-{spec.high}")
    return value


def _parse_values(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _FieldError("empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _FieldError(f"step {step_text!r} in {item!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, spec), _value(last, spec)
            if low > high and not spec.wrap:
                raise _FieldError(f"range {base!r} runs backwards")
        else:
            low = _value(base, spec)
            high = spec.high if slash else low
        if low <= high:
            values.update(range(low, high + 1, step))
        else:  # wrapping day-of-week range, e.g. FRI-MON
            span = list(range(low, spec.high + 1)) + list(range(spec.low, high + 1))
            values.update(span[::step])
    parsed = frozenset(values)
    # Shared by every expression with the same set (the years of every AWS cron(...), ~230
    # values): thousands of schedules hold one copy.
    return _INTERNED.setdefault(parsed, parsed)


_INTERNED: dict[frozenset[int], frozenset[int]] = {}


def _field_error(expression: str, spec: _Field, text: str, why: str) -> ScheduleExpressionError:
    return ScheduleExpressionError(
        expression, f"field {spec.position} ({spec.name}) {text!r}: {why}"
    )


def _aws_weekday(aws: int) -> int:
    """AWS 1-7 = SUN-SAT -> Python 0-6 = MON-SUN."""
    return (aws - 2) % 7


_NTH = re.compile(r"^(\w+)#(\d+)$")
_LAST_DOW = re.compile(r"^(\w*)L$", re.IGNORECASE)
_NEAREST = re.compile(r"^(\d+)W$", re.IGNORECASE)


def _aws_dom(text: str, spec: _Field) -> DayRule:
    upper = text.upper()
    if upper == "*":
        return all_days
    if upper == "L":
        return last_day
    if upper == "LW":
        return last_weekday_of_month
    if m := _NEAREST.match(text):
        return nearest_weekday_rule(_value(m.group(1), spec))
    if any(c in upper for c in "LW#"):
        raise _FieldError("L, LW and nW (e.g. 15W) stand alone in day-of-month; # is day-of-week")
    return dom_days(_parse_values(text, spec))


def _aws_dow(text: str, spec: _Field) -> DayRule:
    if text == "*":
        return all_days
    if m := _NTH.match(text):
        nth = int(m.group(2))
        if not 1 <= nth <= 5:
            raise _FieldError(f"occurrence #{nth} must be 1-5")
        return nth_weekday(_aws_weekday(_value(m.group(1), spec)), nth)
    if m := _LAST_DOW.match(text):
        weekday = 7 if not m.group(1) else _value(m.group(1), spec)  # Quartz: bare L = SAT
        return last_weekday(_aws_weekday(weekday))
    if "#" in text or "L" in text.upper():
        raise _FieldError("n#k (e.g. 3#2) and nL (e.g. 6L) stand alone in day-of-week")
    return dow_days(frozenset(_aws_weekday(v) for v in _parse_values(text, spec)))


def _parse_aws_cron(expression: str, body: str) -> CronSchedule:
    parts = body.split()
    if len(parts) != 6:
        raise ScheduleExpressionError(
            expression,
            f"expected 6 fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(parts)}",
        )
    dom_text, dow_text = parts[2], parts[4]
    if (dom_text == "?") == (dow_text == "?"):
        raise ScheduleExpressionError(
            expression,
            "day-of-month and day-of-week cannot both be specified; use ? in one of them"
            if dom_text != "?"
            else "day-of-month and day-of-week cannot both be ?; give a value in one of them",
        )
    parsed: list[frozenset[int]] = []
    days: DayRule = all_days
    for spec, text in zip(_AWS_FIELDS, parts, strict=True):
        try:
            if text == "?":
                if spec.position not in (3, 5):
                    raise _FieldError("? is only allowed in day-of-month or day-of-week")
                parsed.append(frozenset())
            elif spec.position == 3:
                days = _aws_dom(text, spec)
                parsed.append(frozenset())
            elif spec.position == 5:
                days = _aws_dow(text, spec)
                parsed.append(frozenset())
            else:
                parsed.append(_parse_values(text, spec))
        except _FieldError as e:
            raise _field_error(expression, spec, text, str(e)) from None
    minutes, hours, _, months, _, years = parsed
    return CronSchedule(
        expression, tuple(sorted(minutes)), tuple(sorted(hours)), months, days, years
    )


def _parse_crontab(expression: str, text: str) -> CronSchedule:
    text = CRONTAB_MACROS.get(text.lower(), text)
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleExpressionError(
            expression,
            "expected cron(...), rate(...), at(...) or a 5-field crontab "
            f"(minute hour day-of-month month day-of-week), got {len(parts)} fields",
        )
    parsed: list[frozenset[int]] = []
    for spec, field_text in zip(_CRONTAB_FIELDS, parts, strict=True):
        try:
            parsed.append(_parse_values(field_text, spec))
        except _FieldError as e:
            raise _field_error(expression, spec, field_text, str(e)) from None
    minutes, hours, dom, months, dow = parsed
    weekdays = frozenset((v - 1) % 7 for v in dow)  # 0 and 7 = Sunday
    # Vixie cron: a day field starting with * counts as unrestricted, and then a day must
    # match both fields (``*/2 * 1``: odd days that are Mondays); when both are restricted, a
    # day matching either of them fires (``0 0 13 * 5``: the 13th and every Friday).
    days: DayRule
    if parts[2] == "*" and parts[4] == "*":
        days = all_days
    elif parts[2].startswith("*") or parts[4].startswith("*"):
        days = intersection(dom_days(dom), dow_days(weekdays))
    else:
        days = union(dom_days(dom), dow_days(weekdays))
    return CronSchedule(expression, tuple(sorted(minutes)), tuple(sorted(hours)), months, days)


_RATE = re.compile(r"^(\d+)\s+([a-z]+)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_AT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$")


def _parse_rate(expression: str, body: str) -> RateSchedule:
    m = _RATE.match(body.strip())
    if m is None:
        raise ScheduleExpressionError(
            expression, "expected rate(value unit), e.g. rate(5 minutes) or rate(1 hour)"
        )
    value, unit = int(m.group(1)), m.group(2)
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        raise ScheduleExpressionError(
            expression, f"unit {unit!r} must be minute(s), hour(s) or day(s)"
        )
    if value <= 0:
        raise ScheduleExpressionError(expression, "the value must be a positive number")
    if value == 1 and unit != singular:
        raise ScheduleExpressionError(expression, f"use the singular unit: rate(1 {singular})")
    if value > 1 and unit == singular:
        raise ScheduleExpressionError(expression, f"use the plural unit: rate({value} {singular}s)")
    return RateSchedule(expression, timedelta(seconds=value * _RATE_UNITS[singular]))


def _parse_at(expression: str, body: str) -> AtSchedule:
    m = _AT.match(body.strip())
    if m is None:
        raise ScheduleExpressionError(expression, "expected at(yyyy-mm-ddThh:mm:ss)")
    try:
        year, month, day, hour, minute, second = (int(g) for g in m.groups())
        wall = datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 - wall time
    except ValueError as e:
        raise ScheduleExpressionError(expression, f"not a valid date and time: {e}") from None
    return AtSchedule(expression, wall)


_FORMS = re.compile(r"^(cron|rate|at)\((.*)\)$", re.DOTALL)


@functools.lru_cache(maxsize=16384)
def parse_schedule(expr: str) -> Schedule:
    """Parse ``cron(...)``, ``rate(...)``, ``at(...)`` or a 5-field crontab line.

    Raises :class:`ScheduleExpressionError` (a ``ValueError``) saying what is wrong and where.
    The schedules are immutable: the same expression gives the same object (parsed once for
    the configuration's validation and once more for the source otherwise).
    """
    expression = expr.strip()
    if not expression:
        raise ScheduleExpressionError(repr(expr), "empty schedule expression")
    m = _FORMS.match(expression)
    if m is None:
        if expression.split("(", 1)[0].lower() in ("cron", "rate", "at"):
            raise ScheduleExpressionError(
                expression, "write cron(...), rate(...) or at(...) in lower case, with ( )"
            )
        return _parse_crontab(expression, expression)
    kind, body = m.groups()
    if kind == "cron":
        return _parse_aws_cron(expression, body)
    if kind == "rate":
        return _parse_rate(expression, body)
    return _parse_at(expression, body)
