"""The retrain state of one model: `RetrainTracker`, kept in the model's aggregate."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr

from retrain.commands import JobState

MAX_SEEN_KEYS = 50_000  # keys remembered for deduplication (oldest forgotten first)
MAX_RUNS = 20  # finished runs kept in the tracker's history
MAX_HISTORY_URIS = 100  # data URIs kept per finished run (the count is always kept)


# --------------------------------------------------------------------------- state


class PendingItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    uri: str
    key: str
    rows: int | None = None
    landed_at: AwareDatetime


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
    data_uris: list[str]
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
    data_uris: list[str] = Field(default_factory=list)  # the first MAX_HISTORY_URIS
    data_uri_count: int = 0


class RetrainTracker(BaseModel):
    """Per-model retrain state. JSON round-trippable; `RetrainTracker()` is a fresh model."""

    seen_keys: list[str] = Field(default_factory=list)  # oldest first, <= MAX_SEEN_KEYS
    pending: list[PendingItem] = Field(default_factory=list)
    window: Window | None = None
    window_seq: int = 0
    current_job: CurrentJob | None = None
    last_job_ended_at: AwareDatetime | None = None
    follow_up_pending: bool = False
    follow_up_force: bool = False
    follow_up_reason: str | None = None
    follow_up_manual: bool = False  # asked for by a person: submitted as soon as the job ends
    runs: list[RunRecord] = Field(default_factory=list)  # newest last, <= MAX_RUNS

    _seen: set[str] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:  # the private cache is not state
        return type(other) is type(self) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def seen(self) -> set[str]:
        """The seen keys as a set (built once per tracker object; do not mutate)."""
        if self._seen is None:
            self._seen = set(self.seen_keys)
        return self._seen

    def is_current_job(self, run_id: str) -> bool:
        """Whether a TrainingJobCheck for `run_id` is worth polling."""
        return self.current_job is not None and self.current_job.run_id == run_id

    @property
    def pending_rows(self) -> int | None:
        """Rows pending, or None when some pending item does not report its rows."""
        if any(item.rows is None for item in self.pending):
            return None
        return sum(item.rows or 0 for item in self.pending)
