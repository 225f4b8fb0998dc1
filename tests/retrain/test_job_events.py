"""The pure rules of a run status event: which events ask for a check, and what a check's
answer becomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retrain.job_events import (
    FINAL_RUN_STATUSES,
    TrainingJobEvent,
    event_message_id,
    observed_status,
    skip_reason,
)
from retrain.state import CurrentJob, RetrainTracker

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RUNNING = RetrainTracker(
    current_job=CurrentJob(run_id="churn-1", submitted_at=T0, status="running", checks=3)
)


def event(run_id: str = "churn-1", status: str = "Completed") -> TrainingJobEvent:
    return TrainingJobEvent(run_id=run_id, run_status=status, event_id="e1")


@pytest.mark.parametrize("status", sorted(FINAL_RUN_STATUSES))
def test_a_final_status_of_the_running_job_asks_for_a_check(status: str) -> None:
    assert skip_reason(RUNNING, event(status=status)) is None


@pytest.mark.parametrize(
    ("tracker", "sent", "reason"),
    [
        (RUNNING, event(status="Running"), "not final"),
        (RUNNING, event(status="Finalizing"), "not final"),
        (RUNNING, event(status="CancelRequested"), "not final"),
        (RUNNING, event(run_id="churn-0"), "not the running job"),
        (RetrainTracker(), event(), "not the running job"),
    ],
)
def test_other_events_are_skipped_with_the_reason(
    tracker: RetrainTracker, sent: TrainingJobEvent, reason: str
) -> None:
    assert reason in (skip_reason(tracker, sent) or "")


def test_a_final_answer_is_decided_as_the_check_in_flight() -> None:
    status = observed_status(RUNNING, event(), "completed", None, "7")
    assert not isinstance(status, str)
    assert (status.run_id, status.state, status.registered_version) == ("churn-1", "completed", "7")
    assert status.attempt == 3  # the job's current check: never read as superseded


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_backend_behind_the_event_changes_nothing(state: str) -> None:
    assert "polling continues" in str(observed_status(RUNNING, event(), state, None, None))  # type: ignore[arg-type]


def test_each_event_is_its_own_message() -> None:
    assert event_message_id("churn-1", "e1") != event_message_id("churn-1", "e2")
    with pytest.raises(ValueError):
        TrainingJobEvent(run_id="churn-1", run_status="Completed", event_id="e", extra=1)  # type: ignore[call-arg]
