"""Commands the promotion state machine accepts: plain, frozen data.

The envelope's `type` is the key in `COMMANDS`; its payload validates into the model.
Staleness is judged by content (promotion id, step, check id, candidate version must match
the active promotion's current ones), never by the aggregate version, which moves for
unrelated reasons. Observations (`offline`, `live`) are filled by the service layer just
before `decide`, as `promotion.machine.observation_needed` asks; None means "could not be
read", which is inconclusive and never promotes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.metrics import LiveMetrics, OfflineMetrics, ShadowMetrics
from promotion.state import Drift


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StartPromotion(_Command):
    """A candidate version was registered (by the retrain pipeline or a person)."""

    candidate_version: str = Field(min_length=1, max_length=64)
    run_id: str | None = None
    offline: OfflineMetrics | None = None


class GateCheck(_Command):
    """A scheduled check of one step. `check_id` is the id the machine scheduled it under."""

    promotion_id: str
    step: str
    check_id: str
    live: LiveMetrics | None = None
    offline: OfflineMetrics | None = None
    shadow: ShadowMetrics | None = None


class ApprovalDecision(_Command):
    """A person's answer to a RequestApproval. Must name the promotion, step and version."""

    promotion_id: str
    step: str
    candidate_version: str
    decision: Literal["approve", "reject"]
    approver: str = Field(min_length=1)
    comment: str = ""
    # How the service layer authorized the approver's verified identity ("role:..." or
    # "approvers"; orchestrator/people.py sets it, whatever a payload says). None: the
    # policy's approvers list decides here. Never serialized: not part of what is sent.
    authorized_by: str | None = Field(default=None, exclude=True)


class ApprovalTimedOut(_Command):
    """Scheduled by the machine at the approval's expiry. `timeout_id` is the id it was scheduled
    under: only the one the machine expects counts (a resume reschedules it; None, or any other
    id, is stale)."""

    promotion_id: str
    step: str
    timeout_id: str | None = None


class DeploymentReady(_Command):
    promotion_id: str
    deployment: str
    endpoint: str | None = None  # a later ring's endpoint; None: the model's own


class DeploymentFailed(_Command):
    promotion_id: str
    deployment: str
    error: str = ""
    endpoint: str | None = None  # a later ring's endpoint; None: the model's own


class RollbackRequested(_Command):
    """A person (or a monitor) asks for a rollback.

    `promotion_id=None` means "the active promotion when this is decided": that is not
    idempotent by content (a redelivery could hit a later promotion), so senders should name
    the promotion whenever they can; exact redeliveries are dropped by message id anyway.
    """

    promotion_id: str | None = None
    reason: str = Field(min_length=1)
    requested_by: str = Field(min_length=1)


class PromoteNow(_Command):
    """Skip the remaining canary steps: 100% on the candidate, then the production bake."""

    promotion_id: str
    reason: str = Field(min_length=1)
    requested_by: str = Field(min_length=1)


class PausePromotion(_Command):
    promotion_id: str
    requested_by: str = Field(min_length=1)
    reason: str = ""


class ResumePromotion(_Command):
    promotion_id: str
    requested_by: str = Field(min_length=1)
    reason: str = ""


class EndpointDrift(Drift):
    """The reconcile pass read the endpoint serving something else than the state says."""


class EndpointInSync(_Command):
    """The reconcile pass read the endpoint serving what the state says: clears a drift found
    on that same endpoint (a later ring's name, or None for the model's own), never one found
    on another meanwhile."""

    endpoint: str | None = None


PromotionCommand = (
    StartPromotion
    | GateCheck
    | ApprovalDecision
    | ApprovalTimedOut
    | DeploymentReady
    | DeploymentFailed
    | RollbackRequested
    | PromoteNow
    | PausePromotion
    | ResumePromotion
    | EndpointDrift
    | EndpointInSync
)

COMMANDS: dict[str, type[BaseModel]] = {
    command.__name__: command
    for command in (
        StartPromotion,
        GateCheck,
        ApprovalDecision,
        ApprovalTimedOut,
        DeploymentReady,
        DeploymentFailed,
        RollbackRequested,
        PromoteNow,
        PausePromotion,
        ResumePromotion,
        EndpointDrift,
        EndpointInSync,
    )
}
