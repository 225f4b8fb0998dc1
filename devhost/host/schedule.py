"""Timer trigger schedules as the Functions host reads them, computed by `croniter`.

NCRONTAB has six fields, `{second} {minute} {hour} {day} {month} {day-of-week}` (five are
accepted too, with second 0, as the host does). Each field is `*`, a number or a three-letter
name, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma-separated list of those; cron
extensions NCRONTAB does not have (`L`, `W`, `#`, `?`, `H`, ranges that wrap around) are
refused. As in NCRONTAB, day and day-of-week must BOTH match (not cron's either-or). A TimeSpan
(`hh:mm:ss`, `d.hh:mm:ss`) is an interval, as the host allows on App Service plans. Times are
UTC (WEBSITE_TIME_ZONE unset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterError, croniter

FIELDS = ("second", "minute", "hour", "day", "month", "day-of-week")
_LAYOUT = "{second} {minute} {hour} {day} {month} {day-of-week}"
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_NAMES = {name: i + 1 for i, name in enumerate(_MONTHS)} | {name: i for i, name in enumerate(_DAYS)}
_VALUE = r"(?:\d+|[A-Za-z]{3})"
_ITEM = re.compile(rf"(?:\*|(?P<low>{_VALUE})(?:-(?P<high>{_VALUE}))?)(?:/\d+)?")
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?")


class ScheduleError(ValueError):
    """A schedule expression that cannot be used; the message quotes it."""


def _number(value: str) -> int:
    return int(value) if value.isdigit() else _NAMES.get(value.lower(), -1)


def _check_field(index: int, field: str, expression: str) -> None:
    """One field, alone: what croniter refuses, and what it would accept but NCRONTAB does not
    (cron extensions, ranges that wrap around)."""
    name = FIELDS[index]
    for item in field.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ScheduleError(f"schedule {expression!r}: {name} {item!r} is not NCRONTAB")
        low, high = match["low"], match["high"]
        if low and high and _number(low) > _number(high):
            raise ScheduleError(f"schedule {expression!r}: {name} range {item!r} is reversed")
    alone = ["*"] * len(FIELDS)
    alone[index] = field
    try:
        _croniter(" ".join(alone))
    except CroniterError as exc:
        raise ScheduleError(f"schedule {expression!r}: {name} {field!r} is invalid") from exc


@dataclass(frozen=True)
class CronSchedule:
    expression: str  # as written
    fields: str  # six fields, seconds first

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment` (aware datetimes; naive means UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            return _croniter(self.fields, moment).get_next(datetime)
        except CroniterError as exc:  # e.g. 30 February: valid fields, no such day
            raise ScheduleError(f"schedule {self.expression!r} never fires ({exc})") from exc


@dataclass(frozen=True)
class IntervalSchedule:
    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment + self.interval


Schedule = CronSchedule | IntervalSchedule


def _croniter(fields: str, start: datetime | None = None) -> croniter:
    # NCRONTAB's first field is the second (croniter's default puts seconds last), and its
    # day and day-of-week must both match (croniter's default is either).
    return croniter(fields, start, second_at_beginning=True, day_or=False)


def parse_schedule(expression: str) -> Schedule:
    """Parse an NCRONTAB expression (6 or 5 fields) or a TimeSpan interval."""
    text = expression.strip()
    timespan = _TIMESPAN.fullmatch(text)
    if timespan:
        return _parse_timespan(text, timespan)
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ScheduleError(
            f"schedule {expression!r}: expected 6 fields '{_LAYOUT}' or a TimeSpan 'hh:mm:ss'"
        )
    for index, field in enumerate(fields):
        _check_field(index, field, expression)
    six = " ".join(fields)
    try:
        _croniter(six)
    except CroniterError as exc:
        raise ScheduleError(f"schedule {expression!r}: {exc}") from exc
    return CronSchedule(expression, six)


def _parse_timespan(text: str, match: re.Match[str]) -> IntervalSchedule:
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ScheduleError(
            f"schedule {text!r}: a TimeSpan is 'hh:mm:ss' with hh < 24, mm and ss < 60 "
            "('d.hh:mm:ss' for a day or more)"
        )
    interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if interval <= timedelta(0):
        raise ScheduleError(f"schedule {text!r}: the interval must be positive")
    return IntervalSchedule(text, interval)


def next_occurrences(expression: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times after `after` (for tests, docs and the startup log)."""
    schedule = parse_schedule(expression)
    times: list[datetime] = []
    moment = after
    for _ in range(count):
        moment = schedule.next_after(moment)
        times.append(moment)
    return times
