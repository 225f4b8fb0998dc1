"""The retrain state of one model: `RetrainTracker`, kept in the model's aggregate.

Bounded by design: the keys seen and the items pending live in the data ledger
(orchestrator/ports.py `DataLedger`), a job carries its manifest's reference, its count and a
sample of its URIs, and the history keeps the last MAX_RUNS runs."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from retrain.commands import DATA_SAMPLE, JobState

MAX_RUNS = 20  # finished runs kept in the tracker's history


# --------------------------------------------------------------------------- state


class Window(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    opened_at: AwareDatetime
    closes_at: AwareDatetime
    seq: int = 0  # bumped each time the close is rescheduled
    skip_minimum: bool = False  # a follow-up whose data already met the minimum, or forced
    reason: str = "new data"


class CurrentJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    submitted_at: AwareDatetime
    # The run whose manifest (in the data ledger) lists the data; None: `data_sample` is all
    # of it (a data URI named by a person).
    manifest: str | None = None
    data_count: int = 0
    data_sample: list[str] = Field(default_factory=list, max_length=DATA_SAMPLE)
    reason: str = ""
    status: Literal["submitted", "queued", "running"] = "submitted"
    checks: int = 1  # the latest TrainingJobCheck attempt scheduled


class RunRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    reason: str = ""
    status: JobState
    error: str | None = None
    registered_version: str | None = None
    submitted_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    manifest: str | None = None
    data_count: int = 0
    data_sample: list[str] = Field(default_factory=list, max_length=DATA_SAMPLE)


class MonitorRecord(BaseModel):
    """The production monitor's last evaluation and its cooldown stamp (retrain/monitor.py):
    saved before the retrain it starts goes out, so an overlapping or repeated pass sees it."""

    model_config = ConfigDict(frozen=True)

    evaluated_at: AwareDatetime
    verdict: str
    reason: str = ""
    champion_version: str | None = None
    triggered_at: AwareDatetime | None = None  # the last decay retrain started (the cooldown)
    triggered_run: str | None = None
    # The champion the last decay retrain was started for: retraining it again on the same
    # data would give back the same model, so its next one waits for new data.
    triggered_champion: str | None = None


class RetrainTracker(BaseModel):
    """Per-model retrain state. JSON round-trippable; `RetrainTracker()` is a fresh model."""

    window: Window | None = None
    window_seq: int = 0
    current_job: CurrentJob | None = None
    last_job_ended_at: AwareDatetime | None = None
    follow_up_pending: bool = False
    follow_up_force: bool = False
    follow_up_reason: str | None = None
    follow_up_manual: bool = False  # asked for by a person: submitted as soon as the job ends
    # Items left pending when the last window closed (below the minimum, or past the window's
    # cap): more than this pending with no window open means data landed while a window was
    # closing, and the timer's sweep opens a window for it.
    pending_left: int = 0
    runs: list[RunRecord] = Field(default_factory=list)  # newest last, <= MAX_RUNS
    monitor: MonitorRecord | None = None  # None: never evaluated for decay

    def is_current_job(self, run_id: str) -> bool:
        """Whether a TrainingJobCheck for `run_id` is worth polling."""
        return self.current_job is not None and self.current_job.run_id == run_id
