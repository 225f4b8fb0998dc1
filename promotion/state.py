"""The promotion aggregate's state: what serves, what is being promoted, what happened.

Plain, frozen pydantic data that round-trips through JSON. `PromotionState()` is a model with
nothing in production. Only `promotion.machine.decide` produces new states.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.metrics import ArmStats
from domain.policy import RingSettings
from promotion.gates import CanaryLook, GateEvidence, Outcome

HISTORY_LIMIT = 20
QUEUE_LIMIT = 10


class PromotionStatus(StrEnum):
    CANDIDATE = "candidate"  # transient: created, about to enter the staging gate
    STAGING_GATE = "staging_gate"
    AWAITING_APPROVAL = "awaiting_approval"
    DEPLOYING = "deploying"
    SHADOW = "shadow"  # the candidate answers a mirrored copy of live traffic, nobody sees it
    CANARY = "canary"
    PROMOTING = "promoting"  # transient: traffic is being put 100% on the candidate
    PRODUCTION_BAKE = "production_bake"
    # The candidate on a later ring (policy `rings`): deployed there, then all its traffic, baked.
    RING = "ring"
    COMPLETED = "completed"
    ROLLING_BACK = "rolling_back"  # transient: traffic back to last known-good, candidate removed
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    FAILED = "failed"


TERMINAL = frozenset(
    {
        PromotionStatus.COMPLETED,
        PromotionStatus.ROLLED_BACK,
        PromotionStatus.REJECTED,
        PromotionStatus.FAILED,
    }
)
# Statuses in which the candidate's deployment may exist (and so must be removed on rollback).
DEPLOYED = frozenset(
    {
        PromotionStatus.DEPLOYING,
        PromotionStatus.SHADOW,
        PromotionStatus.CANARY,
        PromotionStatus.PROMOTING,
        PromotionStatus.PRODUCTION_BAKE,
        PromotionStatus.RING,
    }
)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServingModel(_Record):
    version: str
    deployment: str
    since: AwareDatetime


class GateRecord(_Record):
    """The evidence of one gate check."""

    step: str
    check_id: str | None
    outcome: Outcome
    at: AwareDatetime
    evidence: tuple[GateEvidence, ...] = ()


class StepRecord(_Record):
    """Entering a status/step, and who or what caused it."""

    status: PromotionStatus
    step: str
    at: AwareDatetime
    caused_by: str  # "system" or a person
    cause: str  # e.g. "gate passed", "promote_now: looks good", "approved"


class ApprovalRecord(_Record):
    step: str
    decision: str  # "approve" | "reject"
    approver: str  # a person, or "policy:on_timeout"
    comment: str = ""
    at: AwareDatetime


class TrafficWait(_Record):
    """A first model's production bake that found too little traffic to judge: what it has
    and what it needs (policy `first_model.bake_without_traffic` says what happens)."""

    since: AwareDatetime  # the first check that found too little
    checks: int = Field(default=1, ge=1)  # checks that found too little, so far
    requests: int | None  # the candidate's requests over the bake so far; None: unreadable
    errors: int | None
    needed: int  # canary.min_samples_per_arm
    checked_at: AwareDatetime


class Promotion(_Record):
    id: str
    candidate_version: str
    candidate_deployment: str
    run_id: str | None = None
    status: PromotionStatus
    step: str  # "staging", "approval", "deploy", "canary-1".., "bake"
    canary_steps: tuple[int, ...]  # snapshot of policy canary.steps at start
    step_index: int = -1  # index into canary_steps while in canary
    traffic_weight: int = 0  # percent on the candidate
    shadow_percent: int = 0  # percent of live traffic mirrored to the candidate (in shadow)
    step_started_at: AwareDatetime  # start of the current step's live window
    check_attempt: int = 0  # sequence number of the pending check id
    inconclusive: int = 0  # inconclusive results in the current step (retries / extensions)
    pending_check_id: str | None = None
    check_due_at: AwareDatetime | None = None
    approval_expires_at: AwareDatetime | None = None
    deployment_ready: bool = False
    paused: bool = False
    paused_by: str | None = None
    pause_reason: str = ""
    paused_at: AwareDatetime | None = None  # a resume gives the step back the time it lost
    # The known-good model when this promotion started: the production arm and rollback target.
    baseline: ServingModel | None = None
    # The production arm's window for the production bake (the last canary step's window).
    baseline_window: tuple[AwareDatetime, AwareDatetime] | None = None
    # Percent left on the baseline through the production bake (policy production_holdback,
    # fixed when the bake starts): the bake compares candidate and holdback concurrently.
    holdback: int = 0
    # The production bake's length (policy production_bake, fixed when the bake starts): its
    # looks' clock, which a policy edited meanwhile must not move. None: a state saved before
    # it was kept (the policy's length then).
    bake_duration: timedelta | None = None
    approval: ApprovalRecord | None = None
    # A first model's bake waiting for live traffic (None: not waiting).
    traffic_wait: TrafficWait | None = None
    gates: tuple[GateRecord, ...] = ()
    steps: tuple[StepRecord, ...] = ()
    # The canary's sequential design: the looks taken so far (their information fractions set
    # the next looks' boundaries), the counts of the steps already ended (by role: "canary",
    # "production"; no latencies), and when the current step stops waiting for samples.
    looks: tuple[CanaryLook, ...] = ()
    canary_totals: dict[str, ArmStats] = {}
    step_deadline: AwareDatetime | None = None
    # The later rings' endpoints (policy `rings` after the first, fixed at the start), the one
    # being walked (index into them; -1: still on the first ring) and how many of them already
    # had their traffic moved to the candidate.
    rings: tuple[str, ...] = ()
    # Those rings' settings (bake, max_error_rate), fixed at the start too: a ring edited or
    # removed from the policy meanwhile is still walked as it was. Empty: a state saved before
    # they were kept (the policy's settings then).
    ring_settings: tuple[RingSettings, ...] = ()
    ring_index: int = -1
    rings_moved: int = Field(default=0, ge=0)
    started_at: AwareDatetime
    updated_at: AwareDatetime


class QueuedCandidate(_Record):
    version: str
    run_id: str | None = None
    queued_at: AwareDatetime


class HistoryEntry(_Record):
    promotion_id: str
    candidate_version: str
    outcome: PromotionStatus
    reason: str
    started_at: AwareDatetime
    finished_at: AwareDatetime


class Drift(BaseModel):
    """How the endpoint differs from the state: what an `EndpointDrift` command carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    expected_traffic: dict[str, int]
    actual_traffic: dict[str, int]
    missing: tuple[str, ...] = ()  # deployments the state needs that do not exist
    unhealthy: tuple[str, ...] = ()  # deployments the state needs that have failed
    # The mirror (shadow) map: compared only where the endpoint's mirror was read.
    expected_mirror: dict[str, int] = {}
    actual_mirror: dict[str, int] = {}
    endpoint: str | None = None  # a later ring's endpoint (policy `rings`); None: the model's

    @property
    def summary(self) -> str:
        parts = [f"on {self.endpoint}"] if self.endpoint else []
        if self.actual_traffic != self.expected_traffic:
            parts.append(f"traffic {self.actual_traffic} instead of {self.expected_traffic}")
        if self.actual_mirror != self.expected_mirror:
            parts.append(f"mirror {self.actual_mirror} instead of {self.expected_mirror}")
        if self.missing:
            parts.append(f"missing {', '.join(self.missing)}")
        if self.unhealthy:
            parts.append(f"failed {', '.join(self.unhealthy)}")
        return "; ".join(parts)


class PromotionState(_Record):
    champion: ServingModel | None = None  # what takes production traffic now
    # What rollback returns to: updated only when a production bake passes.
    last_known_good: ServingModel | None = None
    active: Promotion | None = None
    queued: tuple[QueuedCandidate, ...] = ()
    history: tuple[HistoryEntry, ...] = Field(default=(), max_length=HISTORY_LIMIT)
    # What the reconcile pass last found the endpoint serving instead; None: in sync.
    drift: Drift | None = None
    drift_repairs: int = 0  # repairs sent for that drift (bounded: machine.MAX_DRIFT_REPAIRS)
    # What each later ring serves, by endpoint: its champion and its own last known-good
    # (updated only when a promotion completes on every ring). The first ring is `champion`.
    rings: dict[str, ServingModel] = {}

    def knows_version(self, version: str) -> str | None:
        """Why a StartPromotion for `version` would be a repeat, or None if it is new."""
        if self.active is not None and self.active.candidate_version == version:
            return f"v{version} is the active candidate"
        if any(item.version == version for item in self.queued):
            return f"v{version} is already queued"
        if self.champion is not None and self.champion.version == version:
            return f"v{version} is in production"
        if self.last_known_good is not None and self.last_known_good.version == version:
            return f"v{version} is the last known-good version"
        for entry in self.history:
            if entry.candidate_version == version:
                return f"v{version} was already promoted ({entry.outcome})"
        return None
