"""The small Protocols the service layer talks to. Adapters implement them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import AwareDatetime, BaseModel, Field

from orchestrator.messages import Envelope
from orchestrator.metrics import LiveMetrics, OfflineMetrics

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

    def update(self, key: str, change: Callable[[A], A | None]) -> tuple[A, bool]:
        """Load, apply, save; on conflict reload and re-apply (bounded). Returns (state, wrote)."""
        ...

    def list_keys(self) -> list[str]: ...


class AuditLog(Protocol):
    def append(self, records: Sequence[AuditRecord]) -> None:
        """Idempotent: a record already written (same model, version, seq) is left as it is."""
        ...

    def read(self, model: str, since_version: int = 0) -> list[AuditRecord]: ...


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


class ArmWindow(BaseModel):
    deployment: str
    window_start: AwareDatetime
    window_end: AwareDatetime


class ModelRegistry(Protocol):
    def tag(self, model: str, version: str, tags: dict[str, str]) -> None: ...


class EventPublisher(Protocol):
    """Lifecycle events and approval requests for the outside world."""

    def publish(self, event_type: str, model: str, data: dict[str, Any]) -> None: ...
