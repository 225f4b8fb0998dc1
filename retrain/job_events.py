"""A training run's status event (Azure ML `RunStatusChanged` / `RunCompleted`): a hint that
the running job may have ended, so it is checked now instead of at its next poll.

The event comes from outside the app and carries no MAC, so it is never believed: it only
makes the service layer ask the training backend at once, and the backend's answer is decided
as any poll's (`TrainingJobStatus`). Polling stays scheduled, so a lost event costs only time.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from retrain.commands import FINAL_STATES, JobState, TrainingJobStatus
from retrain.state import RetrainTracker

JOB_EVENT = "TrainingJobEvent"

# Azure ML's run statuses after which a run never changes; every other status (NotStarted,
# Queued, Preparing, Starting, Running, Finalizing, CancelRequested, ...) is not worth a read.
FINAL_RUN_STATUSES: frozenset[str] = frozenset({"Completed", "Failed", "Canceled"})


class TrainingJobEvent(BaseModel):
    """A run status event as the trigger parsed it (triggers/payloads.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1, max_length=256)
    # Azure ML's status word as the event says it (RunCompleted carries none: "Completed").
    run_status: str = Field(min_length=1, max_length=64)
    event_id: str = Field(min_length=1, max_length=200)
    event_type: Literal["RunStatusChanged", "RunCompleted"] = "RunStatusChanged"


def event_message_id(run_id: str, event_id: str) -> str:
    """One message per event: a redelivered event is a duplicate of itself only. Bounded
    (the envelope takes 128 characters): a readable run id prefix, then a digest of both."""
    digest = hashlib.sha256(f"{run_id}\n{event_id}".encode()).hexdigest()[:32]
    return f"{run_id[:64]}:event:{digest}"


def skip_reason(tracker: RetrainTracker, event: TrainingJobEvent) -> str | None:
    """Why the event asks for no check (logged, never dead-lettered), else None.

    Reordering-safe: an event for a run that is no longer (or never was) the running job, or
    one that says the run is not final (a late "Running" after "Completed"), changes nothing.
    """
    if not tracker.is_current_job(event.run_id):
        return f"run {event.run_id} is not the running job (ended, or not ours): event skipped"
    if event.run_status not in FINAL_RUN_STATUSES:
        return f"run status {event.run_status} is not final: polling continues"
    return None


def observed_status(
    tracker: RetrainTracker,
    event: TrainingJobEvent,
    state: JobState,
    error: str | None,
    registered_version: str | None,
) -> TrainingJobStatus | str:
    """The backend's answer to the event's check: a TrainingJobStatus to decide when the job
    has ended, else why nothing changes (the event ran ahead of the backend; the poll that is
    still scheduled reads it later)."""
    job = tracker.current_job
    if job is None or job.run_id != event.run_id:
        return f"run {event.run_id} is not the running job: event skipped"
    if state not in FINAL_STATES:
        return f"the backend still reports {state} (event: {event.run_status}): polling continues"
    return TrainingJobStatus(
        run_id=event.run_id,
        state=state,
        error=error,
        registered_version=registered_version,
        attempt=job.checks,  # the check in flight: a final state is never "superseded"
    )
