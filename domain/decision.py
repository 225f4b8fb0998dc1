"""What a pure `decide` returns: the new state, the effects to dispatch, the audit entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from domain.effects import Effect

StateT = TypeVar("StateT")


class AuditEntry(BaseModel):
    """One transition, as the domain describes it. The service layer adds who/when/which message."""

    model_config = ConfigDict(frozen=True)

    action: str  # e.g. "promotion.started", "gate.failed", "approval.refused"
    promotion_id: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)  # gate evidence, approver, reason


@dataclass(frozen=True)
class Decision(Generic[StateT]):
    state: StateT
    effects: list[Effect] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    # Set when the command changed nothing (stale, duplicate, refused before any change).
    ignored: str | None = None

    @classmethod
    def ignore(cls, state: StateT, reason: str) -> Decision[StateT]:
        return cls(state=state, ignored=reason)
