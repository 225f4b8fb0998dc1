"""NCRONTAB schedules as the Functions timer trigger reads them.

Six fields: `{second} {minute} {hour} {day} {month} {day-of-week}` (five fields are accepted
too, with second 0). Each field is `*`, a number or name, a range `a-b`, a step `*/n` or
`a-b/n` or `a/n`, or a comma-separated list of those. As in NCrontab, day and day-of-week
must BOTH match (not cron's either-or). A `TimeSpan` (`hh:mm:ss`, `d.hh:mm:ss`) is an
interval, as the host allows on App Service plans. Times are UTC (WEBSITE_TIME_ZONE unset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_SEARCH_LIMIT_DAYS = 366 * 5


class ScheduleError(ValueError):
    """A schedule expression that cannot be parsed; the message quotes it."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_offset: int = 0


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, tuple(_MONTHS), 1),
    _Field("day-of-week", 0, 6, tuple(_DAYS), 0),
)


def _value(text: str, field: _Field, expression: str) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.name_offset
    if not text.isdigit():
        raise ScheduleError(f"schedule {expression!r}: {field.name} value {text!r} is invalid")
    number = int(text)
    if field.name == "day-of-week" and number == 7:
        number = 0  # Sunday, either way
    if not field.low <= number <= field.high:
        raise ScheduleError(
            f"schedule {expression!r}: {field.name} {number} outside {field.low}-{field.high}"
        )
    return number


def _parse_part(part: str, field: _Field, expression: str) -> set[int]:
    base, _, step_text = part.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ScheduleError(f"schedule {expression!r}: step {step_text!r} is invalid")
        step = int(step_text)
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, field, expression), _value(last, field, expression)
        if low > high:
            raise ScheduleError(f"schedule {expression!r}: range {base!r} is reversed")
    else:
        low = _value(base, field, expression)
        high = field.high if step_text else low
    return set(range(low, high + 1, step))


def _parse_field(text: str, field: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"schedule {expression!r}: empty item in {field.name}")
        values |= _parse_part(part, field, expression)
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment` (aware datetimes; naive means UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        day = candidate.replace(hour=0, minute=0, second=0)
        for _ in range(_SEARCH_LIMIT_DAYS):
            if self._day_matches(day):
                found = self._first_time_on(day, candidate)
                if found is not None:
                    return found
            day += timedelta(days=1)
        raise ScheduleError(f"schedule {self.expression!r} never fires")

    def _day_matches(self, day: datetime) -> bool:
        weekday = (day.weekday() + 1) % 7  # Python: Monday 0; NCRONTAB: Sunday 0
        return day.month in self.months and day.day in self.days and weekday in self.weekdays

    def _first_time_on(self, day: datetime, not_before: datetime) -> datetime | None:
        same_day = day.date() == not_before.date()
        for hour in sorted(self.hours):
            if same_day and hour < not_before.hour:
                continue
            for minute in sorted(self.minutes):
                if same_day and hour == not_before.hour and minute < not_before.minute:
                    continue
                for second in sorted(self.seconds):
                    moment = day.replace(hour=hour, minute=minute, second=second)
                    if moment >= not_before:
                        return moment
        return None


@dataclass(frozen=True)
class IntervalSchedule:
    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment + self.interval


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(expression: str) -> Schedule:
    """Parse an NCRONTAB expression (6 or 5 fields) or a TimeSpan interval."""
    text = expression.strip()
    timespan = _TIMESPAN.match(text)
    if timespan:
        return _parse_timespan(text, timespan)
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ScheduleError(
            f"schedule {expression!r}: expected 6 fields "
            "'{second} {minute} {hour} {day} {month} {day-of-week}'"
        )
    pairs = zip(fields, _FIELDS, strict=True)
    parsed = [_parse_field(value, spec, expression) for value, spec in pairs]
    return CronSchedule(expression, *parsed)


def _parse_timespan(text: str, match: re.Match[str]) -> IntervalSchedule:
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
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
