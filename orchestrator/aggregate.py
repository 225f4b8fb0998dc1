"""The one aggregate per model: its retrain tracker, its promotions, its outbox.

Stored as one JSON blob, written with ETag conditions. Effects and audit entries produced
by a transition are stored in the same write (the outbox) and dispatched after it, so a
crash between the save and the dispatch is repaired by dispatching again.
"""

from __future__ import annotations

import hashlib

from pydantic import AwareDatetime, BaseModel, Field

from domain.effects import Effect
from orchestrator.ports import AuditRecord
from promotion.state import PromotionState
from retrain.state import RetrainTracker

# Message ids remembered per model, to drop exact redeliveries before `decide`, as 64-bit
# digests (19 bytes of JSON each, whatever the id's length): 500 keep the aggregate under
# 10 KB. Data events that an open window carries are not remembered here at all (nothing is
# written for them): the data ledger's claims make their redeliveries harmless.
SEEN_MESSAGES_KEPT = 500


def message_digest(message_id: str) -> str:
    return hashlib.sha256(message_id.encode()).hexdigest()[:16]


class OutboxItem(BaseModel):
    id: str  # "<aggregate version>-<index>": stable across re-dispatch
    effect: Effect
    version: int = 0  # the aggregate version that decided it (a newer traffic map supersedes it)
    cause_id: str | None = None
    failed_attempts: int = 0  # dispatches that failed transiently (see Ports.max_effect_attempts)
    first_failed_at: AwareDatetime | None = None
    last_error: str | None = None  # the latest failure, for the sweep's report and the status
    traceparent: str | None = None  # the span that decided it: its effect's span continues it
    # The promotion and step it belongs to, for its spans when it is retried (the decision's
    # audit records are flushed by then).
    promotion_id: str | None = None
    step: str | None = None


class TrafficAlert(BaseModel):
    """A rollback whose traffic cannot be put back on the known-good deployment: it pages."""

    traffic: dict[str, int]  # the map that should hold
    since: AwareDatetime  # the first failed attempt
    attempts: int
    error: str
    endpoint: str | None = None  # the later ring whose rollback it is; None: the model's own


class ModelAggregate(BaseModel):
    model: str
    version: int = 0
    retrain: RetrainTracker = Field(default_factory=RetrainTracker)
    promotion: PromotionState = Field(default_factory=PromotionState)
    seen_messages: list[str] = Field(default_factory=list)
    outbox: list[OutboxItem] = Field(default_factory=list)
    pending_audit: list[AuditRecord] = Field(default_factory=list)
    effects_given_up: int = 0  # effects dropped after their retries (each audited, published)
    traffic_alert: TrafficAlert | None = None  # set while a rollback's traffic does not hold
    # The trace of the model change in progress (a data window, its job, the promotion that
    # follows): messages that carry no trace of their own (a person's, a data event) join it.
    change_trace: str | None = None
    status_since: AwareDatetime | None = None  # when the active promotion entered its status

    @classmethod
    def new(cls, model: str) -> ModelAggregate:
        return cls(model=model)

    def in_change(self) -> bool:
        """A model change is in progress: a data window, a training job or a promotion."""
        retrain = self.retrain
        return bool(retrain.window or retrain.current_job or retrain.follow_up_pending) or (
            self.promotion.active is not None
        )

    def has_seen(self, message_id: str) -> bool:
        # Raw ids: what aggregates written before the digests hold.
        seen = self.seen_messages
        return message_digest(message_id) in seen or message_id in seen

    def remember(self, message_id: str) -> list[str]:
        return [*self.seen_messages, message_digest(message_id)][-SEEN_MESSAGES_KEPT:]
