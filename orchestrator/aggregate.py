"""The one aggregate per model: its retrain tracker, its promotions, its outbox.

Stored as one JSON blob, written with ETag conditions. Effects and audit entries produced
by a transition are stored in the same write (the outbox) and dispatched after it, so a
crash between the save and the dispatch is repaired by dispatching again.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from domain.effects import Effect
from orchestrator.ports import AuditRecord
from promotion.state import PromotionState
from retrain.state import RetrainTracker

# Message ids remembered per model, to drop exact redeliveries before `decide`.
SEEN_MESSAGES_KEPT = 2000


class OutboxItem(BaseModel):
    id: str  # "<aggregate version>-<index>": stable across re-dispatch
    effect: Effect
    cause_id: str | None = None
    failed_attempts: int = 0  # dispatches that failed transiently (see Ports.max_effect_attempts)
    first_failed_at: AwareDatetime | None = None


class ModelAggregate(BaseModel):
    model: str
    version: int = 0
    retrain: RetrainTracker = Field(default_factory=RetrainTracker)
    promotion: PromotionState = Field(default_factory=PromotionState)
    seen_messages: list[str] = Field(default_factory=list)
    outbox: list[OutboxItem] = Field(default_factory=list)
    pending_audit: list[AuditRecord] = Field(default_factory=list)

    @classmethod
    def new(cls, model: str) -> ModelAggregate:
        return cls(model=model)

    def has_seen(self, message_id: str) -> bool:
        return message_id in self.seen_messages

    def remember(self, message_id: str) -> list[str]:
        return [*self.seen_messages, message_id][-SEEN_MESSAGES_KEPT:]
