"""The retrain commands: what arrives (data, a person's request, a closed window, a job's status)
and the message types they travel as."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JobState = Literal["queued", "running", "completed", "failed", "canceled"]
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "canceled"})

WINDOW_CLOSED = "RetrainWindowClosed"
JOB_CHECK = "TrainingJobCheck"
START_PROMOTION = "StartPromotion"


# --------------------------------------------------------------------------- commands


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataItem(_Command):
    uri: str = Field(min_length=1)
    key: str = Field(min_length=1)  # blob name + ETag, or the producer's event id
    rows: int | None = Field(default=None, ge=0)


class DataLanded(_Command):
    items: list[DataItem] = Field(min_length=1)
    source: str = "blob"  # "blob", "eventhub", ...


class RetrainRequested(_Command):
    run_id: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
    )
    reason: str = "manual"
    data_uri: str | None = None
    force: bool = False
    requested_by: str = "unknown"


class RetrainWindowClosed(_Command):
    window_id: str
    seq: int = Field(default=0, ge=0)  # which scheduling of the close (moved by a cooldown)


class TrainingJobCheck(_Command):
    """Handled by the service layer: poll the backend, then decide a TrainingJobStatus."""

    run_id: str
    attempt: int = Field(default=1, ge=1)


class TrainingJobStatus(_Command):
    run_id: str
    state: JobState
    error: str | None = None
    registered_version: str | None = None
    attempt: int = Field(default=1, ge=1)  # the TrainingJobCheck attempt that produced it


RetrainCommand = DataLanded | RetrainRequested | RetrainWindowClosed | TrainingJobStatus

# Message type -> payload model. TrainingJobCheck is parsed here too, but `decide` does not
# take it: the service layer polls the backend and feeds the answer as TrainingJobStatus.
COMMANDS: dict[str, type[BaseModel]] = {
    "DataLanded": DataLanded,
    "RetrainRequested": RetrainRequested,
    WINDOW_CLOSED: RetrainWindowClosed,
    JOB_CHECK: TrainingJobCheck,
    "TrainingJobStatus": TrainingJobStatus,
}
