"""Every port of the service layer, in one place: the small Protocols it talks to, the data
they exchange and the errors they raise. Adapters (adapters/, endpoint_server/) implement them;
the service layer (orchestrator/) imports only this module, never an adapter.

  port             Azure adapter                  local adapter
  StateStore       adapters.blob_state            the same, on Azurite
  AuditLog         adapters.blob_state            the same, on Azurite
  MessageBus       adapters.service_bus           adapters.storage_queue_bus (Azurite)
  TrainingBackend  adapters.azureml_jobs          adapters.local_runner
  OnlineEndpoint   adapters.azureml_endpoint      adapters.local_endpoint (endpoint_server)
  MetricsReader    adapters.mlflow_metrics        the same, on a SQLite MLflow store
  LatencyReader    adapters.traffic_log_latency   (the local request log has latencies)
  ModelRegistry    adapters.mlflow_registry       the same
  EventPublisher   adapters.events (Event Hubs)   adapters.events (an Azurite queue)
  IdentityVerifier adapters.identity (Entra ID)   adapters.identity (adapters.local_issuer)
  DataLedger       adapters.data_ledger           the same, on Azurite

Nothing heavy is imported here: the Functions app imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.data_location import DataAccount
from domain.metrics import LiveMetrics, OfflineMetrics, ShadowMetrics
from domain.policy import ColumnName, ModelPolicy
from orchestrator.clock import Clock, utc_now
from orchestrator.messages import Envelope
from orchestrator.signing import MessageSigner
from retrain.commands import DataItem, PendingData

if TYPE_CHECKING:
    from orchestrator.aggregate import ModelAggregate

A = TypeVar("A", bound=BaseModel)


class ConcurrencyConflict(RuntimeError):
    """Someone else wrote the aggregate since we read it (ETag mismatch)."""


class AuditRecord(BaseModel):
    """One line of the append-only audit log: what changed, why, caused by whom, when."""

    model: str
    aggregate_version: int
    seq: int = 0  # position within the aggregate version
    time: AwareDatetime
    action: str
    promotion_id: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    cause_type: str | None = None  # message type, "http", "timer"
    cause_id: str | None = None  # message id or request id
    actor: str | None = None  # approver, requester, "system"
    detail: dict[str, Any] = Field(default_factory=dict)

    @property
    def record_id(self) -> str:
        return f"{self.aggregate_version:010d}-{self.seq:04d}"


class StateStore(Protocol[A]):
    def load(self, key: str) -> tuple[A, str | None]:
        """The aggregate and its ETag (None: it does not exist yet; a fresh one is returned)."""
        ...

    def save(self, key: str, aggregate: A, etag: str | None) -> str:
        """Write if unchanged since `etag` (create if None); raise ConcurrencyConflict."""
        ...

    def update(
        self,
        key: str,
        change: Callable[[A], A | None],
        loaded: tuple[A, str | None] | None = None,
    ) -> tuple[A, bool]:
        """Load, apply, save; on conflict reload and re-apply (bounded). Returns (state, wrote).

        `loaded`: the (aggregate, ETag) the caller has just read; the first attempt starts
        from it instead of reading again (a stale one only costs a conflict and a reload)."""
        ...

    def list_keys(self) -> list[str]: ...


# The audit records of a run's end: the runs of a model are read from these (their index).
RUN_ENDED_ACTIONS = frozenset(
    {"retrain.job_completed", "retrain.job_failed", "retrain.job_canceled"}
)
MAX_AUDIT_PAGE = 1000  # records in one page, at most


class InvalidContinuation(ValueError):
    """A continuation token that is not one this log gave for the same query; `reason` says
    why (a 400 over HTTP)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AuditPage:
    """One page of audit records, oldest first. `continuation` (opaque) reads the next page of
    the same query; None: there is no more. A page may hold fewer records than asked for, even
    none, and still have a continuation."""

    records: list[AuditRecord]
    continuation: str | None = None


class AuditLog(Protocol):
    def append(self, records: Sequence[AuditRecord]) -> None:
        """Idempotent: a record already written (same model, version, seq) is left as it is.
        A record of a promotion is also indexed under that promotion, and a run's end
        (RUN_ENDED_ACTIONS) under the model's runs, so each reads without the rest."""
        ...

    def page(
        self,
        model: str,
        *,
        promotion_id: str | None = None,
        run_ends: bool = False,
        limit: int = 100,
        continuation: str | None = None,
    ) -> AuditPage:
        """Up to `limit` (1..MAX_AUDIT_PAGE) records of `model`, oldest first (the order they
        were appended in: aggregate version, then seq): all of them, only `promotion_id`'s, or
        only its runs' ends (`run_ends`). Reads those records and nothing else of the model.
        `continuation`: from the previous page of the same query; else InvalidContinuation."""
        ...


class ScheduledHandle(BaseModel):
    """What `schedule` returns and `cancel` takes (a sequence number or a queue receipt)."""

    transport: str
    value: str


class MessageBus(Protocol):
    def send(self, envelope: Envelope) -> None: ...

    def schedule(self, envelope: Envelope, at: datetime) -> ScheduledHandle: ...

    def cancel(self, handle: ScheduledHandle) -> None: ...


class MetricsReader(Protocol):
    """Reads what the gates judge (MLflow in both Azure and local)."""

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics: ...

    def live(
        self, model: str, promotion_id: str, step: int, arms: Sequence[ArmWindow]
    ) -> LiveMetrics: ...

    def shadow(
        self, model: str, candidate: str, production: str, start: datetime, end: datetime
    ) -> ShadowMetrics:
        """A shadow stage's window: production's live requests, the candidate's mirrored
        copies, and how many mirrored pairs (the same request id) predicted the same."""
        ...


class ArmWindow(BaseModel):
    deployment: str
    window_start: AwareDatetime
    window_end: AwareDatetime
    endpoint: str | None = None  # a later ring's endpoint (policy `rings`); None: the model's


class LatencyReader(Protocol):
    """Request latencies of one deployment over a window, from where the platform records them
    per request: Azure's data collector records none, the online endpoint's traffic log
    (AmlOnlineEndpointTrafficLog in Log Analytics) does. Successful requests, oldest first,
    evenly thinned to at most `limit`."""

    def latencies(
        self, endpoint: str, deployment: str, start: datetime, end: datetime, limit: int
    ) -> list[float]: ...


class ModelRegistry(Protocol):
    def tag(self, model: str, version: str, tags: dict[str, str]) -> None: ...


class EventPublisher(Protocol):
    """Lifecycle events and approval requests for the outside world."""

    def publish(self, event_type: str, model: str, data: dict[str, Any]) -> None: ...


# --------------------------------------------------------------------------- training backend

BackendJobState = Literal["queued", "running", "completed", "failed", "canceled"]


class TrainingBackendError(RuntimeError):
    """The backend refused or failed a request; the message is the service's own."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class TrainingRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")  # the job name
    model: str  # also the registered model name
    pipeline_file: str  # path to pipeline.yml (relative paths: to the app root)
    data_uris: list[str] = Field(min_length=1)
    data_input: str = "training_data"
    experiment: str
    compute: str | None = None  # None keeps the YAML's default compute
    champion_version: str | None = None  # the production model, evaluated on the same holdout
    tags: dict[str, str] = Field(default_factory=dict)
    # The dataset's columns (the policy's data section): passed as the pipeline's inputs.
    label_column: ColumnName = "label"
    feature_columns: list[ColumnName] | None = None  # None: every column but the label


class JobStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    state: BackendJobState
    error: str | None = None
    registered_model: str | None = None  # set when completed
    registered_version: str | None = None
    service_status: str | None = None  # the backend's own status word, for the audit log


@runtime_checkable
class TrainingBackend(Protocol):
    def submit(self, request: TrainingRequest) -> str:
        """Start the pipeline; return the job id. Submitting the same run_id twice is a no-op."""
        ...

    def status(self, job_id: str) -> JobStatus:
        """The job's state now. Raises TrainingBackendError when it cannot be read."""
        ...

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop, without waiting. A job that has ended or is unknown is fine."""
        ...


# --------------------------------------------------------------------------- online endpoint

DeploymentState = Literal["creating", "succeeded", "failed", "deleting", "missing"]


class EndpointError(Exception):
    """An endpoint operation was refused or failed; the message is the service's own.

    `transient`: worth trying again later (throttled, unavailable, timed out); otherwise the
    request itself was refused (quota, bad model, missing endpoint) and will fail again.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class DeploymentBusy(EndpointError):
    """The deployment cannot be removed yet: the endpoint is still applying a traffic change
    (Azure ML takes minutes), or traffic still reaches the deployment. Nothing was refused;
    the same call succeeds once the update is done."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class InvalidTraffic(EndpointError, ValueError):
    """A traffic or mirror map breaks the rules; `reason` says which one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DeploymentStatus:
    deployment: str
    state: DeploymentState
    error: str | None = None
    model_name: str | None = None
    model_version: str | None = None

    @property
    def done(self) -> bool:
        """True when the state will not change by itself (succeeded, failed or missing)."""
        return self.state in ("succeeded", "failed", "missing")


@runtime_checkable
class OnlineEndpoint(Protocol):
    """One online endpoint: its deployments and how live traffic is split between them."""

    def deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        """Start deploying registered `model_name` `model_version` as `deployment`; do not wait.

        Idempotent: when `deployment` exists with the same model version (and has not failed)
        nothing is sent. Returns the deployment name.
        """
        ...

    def deployment_state(self, deployment: str) -> DeploymentStatus: ...

    def set_traffic(self, traffic: dict[str, int]) -> None:
        """Set the live split to this absolute map (validated first; see the module doc).

        A mirror on a deployment that now takes live traffic is dropped.
        """
        ...

    def set_mirror(self, mirror: dict[str, int]) -> None:
        """Set the absolute mirror (shadow) map; ``{}`` turns mirroring off."""
        ...

    def delete(self, deployment: str) -> None:
        """Start removing `deployment`. Idempotent: a missing deployment is fine.

        A deployment that shares the live traffic with others is refused: move the traffic
        first. The only deployment serving may be removed; the endpoint then serves nothing.
        Raises `DeploymentBusy` when the endpoint must finish an update first.
        """
        ...

    def traffic(self) -> dict[str, int]:
        """The live split, zero weights omitted. Raises `DeploymentBusy` while the endpoint is
        applying an update (the split it reads back then may still be the old one)."""
        ...

    def mirror(self) -> dict[str, int]:
        """The mirror (shadow) map, zero weights omitted (read back by the reconcile pass)."""
        ...

    def deployments(self) -> list[DeploymentStatus]:
        """Every deployment the endpoint has now, with its model and state (read back by the
        timer's reconcile pass, which compares it with what the state says)."""
        ...


class InvalidDeploymentName(EndpointError, ValueError):
    """A deployment name that Azure ML would refuse."""


# --------------------------------------------------------------------------- data ledger


class DataLedger(Protocol):
    """A model's data keys and pending data, outside its aggregate (which stays small and is
    not written per event). Keys are claimed for deduplication and remembered for a retention
    window; each new item is pending until a job's manifest takes it.

    Every call is idempotent: at-least-once delivery and crashes between calls are expected.
    """

    def claim(
        self,
        model: str,
        items: Sequence[DataItem],
        claimant: str,
        now: datetime,
        keep_for: timedelta,
    ) -> list[DataItem]:
        """Claim each item's key for `claimant` (the message id) and make the new ones
        pending. Returns the items that count: keys never seen (within `keep_for`), and keys
        this same claimant claimed whose item is still pending (a redelivery counts its own
        items again, adding nothing); the rest are duplicates, as is an item a job has taken.
        Keys older than `keep_for` are forgotten when their part of the index is next
        written."""
        ...

    def pending(self, model: str) -> PendingData:
        """What is pending now: how many items, their rows (None when one does not say), the
        oldest few URIs."""
        ...

    def seal(self, model: str, run_id: str, limit: int) -> list[str]:
        """The data URIs of run `run_id`'s manifest, made from the `limit` oldest pending
        items if it does not exist yet (first writer wins: a redelivery gets the same list)."""
        ...

    def manifest(self, model: str, run_id: str) -> list[str] | None:
        """The data URIs of an existing manifest; None when there is none."""
        ...

    def release(self, model: str, run_id: str, limit: int) -> int:
        """The job of `run_id` has its data: its manifest's items stop being pending (their
        keys stay claimed: a late redelivery is a duplicate). From the first call until the
        last, `pending`, `seal` and `claim` skip every item the manifest names; each call
        removes at most `limit` more of them. Returns how many are left (0: released)."""
        ...

    def releasing(self, model: str) -> list[str]:
        """The runs whose release has started and not finished (the timer's sweep goes on
        with them)."""
        ...


# --------------------------------------------------------------------------- identity


class Unauthenticated(Exception):
    """A token that proves nobody: missing, expired, for another audience, issuer or tenant,
    badly signed, or signed by a key the issuer does not publish. `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityUnavailable(RuntimeError):
    """The issuer's keys could not be read (network, endpoint down): nothing is known about the
    token yet. Transient: the message is delivered again."""


@dataclass(frozen=True)
class Principal:
    """Who a verified token says its bearer is (the claims Entra ID issues)."""

    object_id: str  # oid: the user's (or app's) immutable id in the tenant
    name: str | None  # name: display name
    upn: str | None  # preferred_username (v2) or upn (v1)
    token_id: str | None  # uti (Entra) or jti: this token, for the audit
    tenant_id: str  # tid
    roles: tuple[str, ...]  # app roles assigned to the bearer for this API
    expires_at: datetime  # exp

    @property
    def display(self) -> str:
        """How the audit names the bearer: the UPN, else the object id."""
        return self.upn or self.object_id


class IdentityVerifier(Protocol):
    def verify(self, token: str) -> Principal:
        """The token's principal; raise Unauthenticated(reason), or IdentityUnavailable when
        the issuer's keys cannot be read."""
        ...


# --------------------------------------------------------------------------- the bundle


@dataclass
class Ports:
    """What the service layer is given: every port, the policies, the clock and the knobs of
    the outbox. `orchestrator.bootstrap` builds it from settings (and takes overrides)."""

    store: StateStore[ModelAggregate]
    audit: AuditLog
    bus: MessageBus
    training: TrainingBackend
    endpoints: Callable[[ModelPolicy], OnlineEndpoint]
    metrics: MetricsReader
    registry: ModelRegistry
    events: EventPublisher
    policies: Mapping[str, ModelPolicy]
    signer: MessageSigner  # signs the app's own messages; internal types must carry its MAC
    ledger: DataLedger  # the data keys seen and the data pending, per model
    clock: Clock = utc_now
    deployment_poll: timedelta = timedelta(seconds=30)
    default_compute: str | None = None
    # Where training data may come from (domain/data_location.py): a DataLanded item or a
    # RetrainRequested data_uri naming anything else is an InvalidMessage. Bootstrap always
    # sets it (Settings.data_account); None only in a Ports built by hand.
    data_account: DataAccount | None = None
    max_deployment_checks: int = 120
    # A training submit or a deployment that still fails transiently (after the SDK's own
    # retries) on this many dispatches, and this long after its first failure, fails its step
    # with the service's message (redeliveries come at once: the window keeps a short outage
    # from failing a step).
    max_effect_attempts: int = 5
    effect_retry_window: timedelta = timedelta(minutes=15)
    # A scheduled check this late is sent again by the sweep (see OVERDUE_CHECK_SECONDS).
    overdue_check_grace: timedelta = timedelta(minutes=1)
    # Verifies the bearer token a person's command carries (orchestrator/people.py). None:
    # every person's command arriving on a queue is refused.
    identity: IdentityVerifier | None = None
