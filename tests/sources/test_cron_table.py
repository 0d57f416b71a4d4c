"""Schedule expressions against known next fire times (tests/sources/cron_cases.txt)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from connectors.schedule.cron import (
    CronSchedule,
    RateSchedule,
    ScheduleExpressionError,
    parse_schedule,
)

CASES_FILE = Path(__file__).with_name("cron_cases.txt")


@dataclass(frozen=True, slots=True)
class Case:
    line: int
    expression: str
    tz: str
    after: str = ""
    expected: tuple[str, ...] = ()
    ends: bool = False
    error: str = ""

    def __str__(self) -> str:
        return f"L{self.line}:{self.expression}"


def _load() -> list[Case]:
    cases = []
    for number, raw in enumerate(CASES_FILE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if parts[1] == "error":
            assert len(parts) == 3, f"line {number}: expression | error | fragment"
            cases.append(Case(number, parts[0], "", error=parts[2]))
            continue
        assert len(parts) == 4, f"line {number}: expression | tz | after | fires"
        fires = [f.strip() for f in parts[3].split(",")]
        ends = fires[-1] == "end"
        if ends:
            fires.pop()
        cases.append(Case(number, parts[0], parts[1], parts[2], tuple(fires), ends))
    return cases


CASES = _load()


def _iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("case", [c for c in CASES if not c.error], ids=str)
def test_next_fires(case: Case) -> None:
    schedule = parse_schedule(case.expression)
    tz = ZoneInfo(case.tz)
    got: list[datetime] = []
    t = _iso(case.after)
    for _ in range(len(case.expected) + (1 if case.ends else 0)):
        nxt = schedule.next_fire(t, tz)
        if nxt is None:
            break
        assert nxt.tzinfo is tz
        got.append(nxt)
        t = nxt
    expected = [_iso(e) for e in case.expected]
    # Compare as instants, shown in the zone's local time for a readable diff.
    assert [g.isoformat() for g in got] == [e.astimezone(tz).isoformat() for e in expected]
    if case.ends:
        assert len(got) == len(expected), f"expected no fire after {case.expected[-1:]}"


@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=str)
def test_invalid_expressions(case: Case) -> None:
    with pytest.raises(ScheduleExpressionError) as info:
        parse_schedule(case.expression)
    assert case.error in str(info.value)
    assert str(info.value).startswith(case.expression)
    assert isinstance(info.value, ValueError)


def test_table_covers_the_features() -> None:
    text = " ".join(c.expression for c in CASES)
    for feature in (" L ", "W ", "LW", "#", "6L", "?", "rate(", "at(", "@daily", "JAN", "FRI"):
        assert feature in text, feature
    zones = {c.tz for c in CASES}
    assert {"America/New_York", "Europe/Berlin", "UTC"} <= zones


def test_fires_between_is_exclusive_start_inclusive_end() -> None:
    schedule = parse_schedule("cron(0 * * * ? *)")
    start = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    fires = list(schedule.fires_between(start, start + timedelta(hours=3), ZoneInfo("UTC")))
    assert fires == [start + timedelta(hours=h) for h in (1, 2, 3)]


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("rate(1 minute)").next_fire(datetime(2024, 1, 1), ZoneInfo("UTC"))


def test_rate_anchor() -> None:
    schedule = parse_schedule("rate(7 minutes)")
    assert isinstance(schedule, RateSchedule)
    anchored = schedule.with_anchor(datetime(2024, 1, 1, 0, 3, tzinfo=UTC))
    utc = ZoneInfo("UTC")
    assert anchored.next_fire(datetime(2023, 1, 1, tzinfo=UTC), utc) == datetime(
        2024, 1, 1, 0, 3, tzinfo=UTC
    )
    assert anchored.next_fire(datetime(2024, 1, 1, 0, 3, tzinfo=UTC), utc) == datetime(
        2024, 1, 1, 0, 10, tzinfo=UTC
    )


def _crontab_to_apscheduler(dow: str) -> str:
    """Crontab day-of-week (0 = Sunday) to APScheduler's (0 = Monday)."""
    names = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    return ",".join(names[int(v) % 7] for v in dow.split(","))


def test_agrees_with_apscheduler_crontrigger() -> None:
    """Where both understand an expression (UTC, no DST, no W/LW), fires are identical."""
    rng = random.Random(20240229)
    utc = ZoneInfo("UTC")
    for _ in range(150):
        minute = rng.choice(["*/7", "0", "5,35", "10-20/5", "59"])
        hour = rng.choice(["*", "0", "*/5", "9-17", "23"])
        month = rng.choice(["*", "2", "1-6", "*/4"])
        if rng.random() < 0.5:
            dom, dow = rng.choice(["1", "15", "29", "31", "1-7", "*/10"]), "*"
            aps_day = dom
            aps_dow = "*"
        else:
            dom, dow = "*", ",".join(sorted({str(rng.randint(0, 6)) for _ in range(2)}))
            aps_day, aps_dow = "*", _crontab_to_apscheduler(dow)
        expr = f"{minute} {hour} {dom} {month} {dow}"
        ours = parse_schedule(expr)
        assert isinstance(ours, CronSchedule)
        theirs = CronTrigger(
            minute=minute, hour=hour, day=aps_day, month=month, day_of_week=aps_dow, timezone=UTC
        )
        t = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 500_000))
        previous = t
        for _ in range(5):
            mine = ours.next_fire(t, utc)
            # APScheduler's next fire is inclusive of "now"; step one second past ours.
            expected = theirs.get_next_fire_time(previous, t + timedelta(seconds=1))
            assert mine == expected, expr
            if mine is None:
                break
            previous, t = mine, mine
