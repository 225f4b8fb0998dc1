"""Timer invocations (with an injected clock): on startup, when due, and once when past due."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func
import pytest

from tests.devhost.host.conftest import HostFactory

START = datetime(2024, 1, 5, 10, 2, 30, tzinfo=UTC)


def at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, second, tzinfo=UTC)


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
