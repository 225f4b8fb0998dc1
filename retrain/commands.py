"""The retrain commands: what arrives (data, a person's request, a closed window, a job's status)
and the message types they travel as."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from retrain.monitor import MonitorDecision

JobState = Literal["queued", "running", "completed", "failed", "canceled"]
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "canceled"})

WINDOW_CLOSED = "RetrainWindowClosed"
JOB_CHECK = "TrainingJobCheck"
START_PROMOTION = "StartPromotion"

# Data URIs a job, a run record or an observation of pending data carries as a sample; the
# full list lives in the data ledger's manifest of the run.
DATA_SAMPLE = 5


# --------------------------------------------------------------------------- commands


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PendingData(_Command):
    """The data waiting for a job, as the data ledger reports it. An observation: the service
    layer reads it and sets it on the command (a sender's value is discarded)."""

    items: int = Field(default=0, ge=0)
    rows: int | None = Field(default=0, ge=0)  # None: some item does not report its rows
    sample: list[str] = Field(default_factory=list, max_length=DATA_SAMPLE)  # oldest first
    newest_landed_at: AwareDatetime | None = None  # when the last pending item landed


class DataItem(_Command):
    uri: str = Field(min_length=1)
    key: str = Field(min_length=1)  # blob name + ETag, or the producer's event id
    rows: int | None = Field(default=None, ge=0)


class DataLanded(_Command):
    items: list[DataItem] = Field(min_length=1)
    source: str = "blob"  # "blob", "eventhub", ...
    # Observed: how many items the data ledger took as new (the rest were seen before).
    new_items: int | None = Field(default=None, ge=0)


class RetrainRequested(_Command):
    run_id: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
    )
    reason: str = "manual"
    data_uri: str | None = None
    force: bool = False
    requested_by: str = "unknown"
    # Observed: what is pending (after `data_uri` was recorded), and whether `data_uri` was
    # data the model already had.
    pending: PendingData | None = None
    data_known: bool | None = None


class RetrainWindowClosed(_Command):
    window_id: str
    seq: int = Field(default=0, ge=0)  # which scheduling of the close (moved by a cooldown)
    pending: PendingData | None = None  # observed when the window closes


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
    pending: PendingData | None = None  # observed when the job ended with a follow-up asked for


class PendingDataFound(_Command):
    """The timer's sweep found data pending with no window open to carry it (it landed while
    its window was closing). Not a message type: the sweep decides it directly."""

    pending: PendingData


class MonitorEvaluated(_Command):
    """The production monitor's decision on the champion (retrain/monitor.py), or an outside
    monitor's alert mapped to one. Not a message type: the timer's monitor pass decides it
    directly. `pending` is observed when the decision triggers a retrain."""

    decision: MonitorDecision
    pending: PendingData | None = None


RetrainCommand = (
    DataLanded
    | RetrainRequested
    | RetrainWindowClosed
    | TrainingJobStatus
    | PendingDataFound
    | MonitorEvaluated
)

# The observation fields of each command: the service layer clears what a sender put there
# and sets what it observed.
OBSERVED_FIELDS: tuple[str, ...] = ("new_items", "pending", "data_known")

# Message type -> payload model. TrainingJobCheck is parsed here too, but `decide` does not
# take it: the service layer polls the backend and feeds the answer as TrainingJobStatus.
COMMANDS: dict[str, type[BaseModel]] = {
    "DataLanded": DataLanded,
    "RetrainRequested": RetrainRequested,
    WINDOW_CLOSED: RetrainWindowClosed,
    JOB_CHECK: TrainingJobCheck,
    "TrainingJobStatus": TrainingJobStatus,
}
