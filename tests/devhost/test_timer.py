"""NCRONTAB parsing and timer invocations (with an injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func
import pytest

from devhost.ncrontab import ScheduleError, next_occurrences, parse_schedule
from tests.devhost.conftest import HostFactory

START = datetime(2024, 1, 5, 10, 2, 30, tzinfo=UTC)  # a Friday


def at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 */5 * * * *", [at(5, 10, 5), at(5, 10, 10), at(5, 10, 15)]),
        ("*/20 * * * * *", [at(5, 10, 2, 40), at(5, 10, 3), at(5, 10, 3, 20)]),
        ("0 0 9-10 * * *", [at(6, 9, 0), at(6, 10, 0), at(7, 9, 0)]),
        ("0 30 9 * * Mon-Fri", [at(8, 9, 30), at(9, 9, 30), at(10, 9, 30)]),
        ("0 0 0 * * 0,6", [at(6, 0, 0), at(7, 0, 0), at(13, 0, 0)]),
        ("0 15,45 10 * * *", [at(5, 10, 15), at(5, 10, 45), at(6, 10, 15)]),
        ("0 0 12 1 Feb *", [datetime(2024, 2, 1, 12, tzinfo=UTC)] * 1
         + [datetime(2025, 2, 1, 12, tzinfo=UTC), datetime(2026, 2, 1, 12, tzinfo=UTC)]),
        ("00:10:00", [at(5, 10, 12, 30), at(5, 10, 22, 30), at(5, 10, 32, 30)]),
    ],
)  # fmt: skip
def test_next_occurrences(expression: str, expected: list[datetime]) -> None:
    assert next_occurrences(expression, START, 3) == expected


def test_day_and_weekday_must_both_match() -> None:
    # NCRONTAB: the 13th AND a Friday (cron would fire on either).
    assert next_occurrences("0 0 0 13 * Fri", START, 2) == [
        datetime(2024, 9, 13, tzinfo=UTC),
        datetime(2024, 12, 13, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    "expression", ["* * * *", "60 * * * * *", "0 */0 * * * *", "0 0 5-2 * * *", "0 0 0 * Foo *"]
)
def test_invalid_schedules_are_clear_errors(expression: str) -> None:
    with pytest.raises(ScheduleError, match="schedule"):
        parse_schedule(expression)


@pytest.mark.azurite
def test_timer_fires_on_startup_and_when_due(make_host: HostFactory) -> None:
    now = [START]
    requests: list[func.TimerRequest] = []
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="%SWEEP_SCHEDULE%", run_on_startup=True)
    def sweeper(timer: func.TimerRequest) -> None:
        requests.append(timer)

    host = make_host(app, {"SWEEP_SCHEDULE": "0 */5 * * * *"}, clock=lambda: now[0])

    assert host.run_pending_once() == 1  # run_on_startup
    assert host.run_pending_once() == 0
    now[0] = at(5, 10, 5)
    assert host.run_pending_once() == 1
    assert host.run_pending_once() == 0
    now[0] = at(5, 10, 20)  # missed 10:10 and 10:15: one late invocation, past due
    assert host.run_pending_once() == 1
    assert host.run_pending_once() == 0

    assert all(isinstance(request, func.TimerRequest) for request in requests)
    assert [request.past_due for request in requests] == [False, False, True]
    assert requests[-1].schedule_status["Next"] == (at(5, 10, 25)).isoformat()
