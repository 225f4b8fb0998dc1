"""Timer schedules (devhost/host/schedule.py, on croniter): NCRONTAB's six fields with the
second FIRST, the five-field form, TimeSpan intervals, and clear errors for the rest."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from devhost.host.schedule import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    next_occurrences,
    parse_schedule,
)

START = datetime(2024, 1, 5, 10, 2, 30, tzinfo=UTC)  # a Friday


def at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 */5 * * * *", [at(5, 10, 5), at(5, 10, 10), at(5, 10, 15)]),
        ("*/20 * * * * *", [at(5, 10, 2, 40), at(5, 10, 3), at(5, 10, 3, 20)]),
        ("5/15 * * * * *", [at(5, 10, 2, 35), at(5, 10, 2, 50), at(5, 10, 3, 5)]),
        ("30 * * * * *", [at(5, 10, 3, 30), at(5, 10, 4, 30), at(5, 10, 5, 30)]),
        ("0 0 9-10 * * *", [at(6, 9, 0), at(6, 10, 0), at(7, 9, 0)]),
        ("0 30 9 * * Mon-Fri", [at(8, 9, 30), at(9, 9, 30), at(10, 9, 30)]),
        ("0 0 0 * * 0,6", [at(6, 0, 0), at(7, 0, 0), at(13, 0, 0)]),
        ("0 0 0 * * 7", [at(7, 0, 0), at(14, 0, 0), at(21, 0, 0)]),  # 7 is Sunday too
        ("0 15,45 10 * * *", [at(5, 10, 15), at(5, 10, 45), at(6, 10, 15)]),
        ("0 0 12 1 Feb *", [datetime(2024, 2, 1, 12, tzinfo=UTC)] * 1
         + [datetime(2025, 2, 1, 12, tzinfo=UTC), datetime(2026, 2, 1, 12, tzinfo=UTC)]),
        ("*/5 * * * *", [at(5, 10, 5), at(5, 10, 10), at(5, 10, 15)]),  # five fields: second 0
    ],
)  # fmt: skip
def test_ncrontab_next_occurrences(expression: str, expected: list[datetime]) -> None:
    assert isinstance(parse_schedule(expression), CronSchedule)
    assert next_occurrences(expression, START, 3) == expected


def test_the_first_of_six_fields_is_the_second() -> None:
    # As a year or trailing seconds field, "30" would fire at :00 or never in 2024.
    assert next_occurrences("30 0 10 * * *", START, 2) == [at(6, 10, 0, 30), at(7, 10, 0, 30)]


def test_day_and_weekday_must_both_match() -> None:
    # NCRONTAB: the 13th AND a Friday (cron would fire on either).
    assert next_occurrences("0 0 0 13 * Fri", START, 2) == [
        datetime(2024, 9, 13, tzinfo=UTC),
        datetime(2024, 12, 13, tzinfo=UTC),
    ]


def test_next_is_strictly_after_and_naive_means_utc() -> None:
    schedule = parse_schedule("0 */5 * * * *")
    assert schedule.next_after(at(5, 10, 5)) == at(5, 10, 10)
    assert schedule.next_after(at(5, 10, 4, 59).replace(microsecond=500_000)) == at(5, 10, 5)
    assert schedule.next_after(datetime(2024, 1, 5, 10, 2, 30)) == at(5, 10, 5)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("00:10:00", [at(5, 10, 12, 30), at(5, 10, 22, 30), at(5, 10, 32, 30)]),
        ("00:00:45", [at(5, 10, 3, 15), at(5, 10, 4), at(5, 10, 4, 45)]),
        ("01:30", [at(5, 11, 32, 30), at(5, 13, 2, 30), at(5, 14, 32, 30)]),
        ("1.02:00:00", [at(6, 12, 2, 30), at(7, 14, 2, 30), at(8, 16, 2, 30)]),
    ],
)
def test_timespan_is_an_interval(expression: str, expected: list[datetime]) -> None:
    assert isinstance(parse_schedule(expression), IntervalSchedule)
    assert next_occurrences(expression, START, 3) == expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * * *", "expected 6 fields"),
        ("0 0 0 1 1 * 2025", "expected 6 fields"),  # no year field
        ("", "expected 6 fields"),
        ("60 * * * * *", "second '60' is invalid"),
        ("0 */0 * * * *", "minute '\\*/0' is invalid"),
        ("0 0 24 * * *", "hour '24' is invalid"),
        ("0 0 5-2 * * *", "hour range '5-2' is reversed"),
        ("0 0 0 32 * *", "day '32' is invalid"),
        ("0 0 0 * Foo *", "month 'Foo' is invalid"),
        ("0 0 0 * * Sat-Sun", "day-of-week range 'Sat-Sun' is reversed"),
        ("0 0 0 L * *", "day 'L' is not NCRONTAB"),  # cron extensions croniter knows
        ("0 0 0 ? * *", "day '\\?' is not NCRONTAB"),
        ("0 0 0 * * 5#2", "day-of-week '5#2' is not NCRONTAB"),
        ("H 0 0 * * *", "second 'H' is not NCRONTAB"),
        ("00:60:00", "a TimeSpan is .hh:mm:ss. with hh < 24, mm and ss < 60"),
        ("24:00:00", "a TimeSpan is .hh:mm:ss. with hh < 24"),
        ("00:00:00", "the interval must be positive"),
    ],
)
def test_invalid_schedules_are_clear_errors(expression: str, problem: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(f"schedule {expression!r}: ") + problem):
        parse_schedule(expression)


def test_a_schedule_that_never_fires_says_so() -> None:
    schedule = parse_schedule("0 0 0 31 Feb *")
    with pytest.raises(ScheduleError, match="schedule '0 0 0 31 Feb \\*' never fires"):
        schedule.next_after(START)
