"""The promotion state machine: `decide(state, command, policy, now) -> Decision`.

Pure: no I/O, no clock, no randomness. Effects are data the service layer dispatches in order
(the order matters for rollback: traffic back on the known-good deployment before the
candidate's deployment is deleted).

Conventions:
- A command that changes nothing returns the same state, no effects, `ignored=<reason>` and one
  audit entry saying so (`approval.refused` for approvals, `command.ignored` otherwise), so
  the service layer can log it and still skip the write.
- `promoting` and `rolling_back` are transient: a single decision passes through them (the audit
  shows it) and lands in `production_bake`, or in a terminal status.
- Scheduled messages have deterministic ids: `{promotion_id}:{step}:check:{n}` for gate
  checks and `{promotion_id}:approval:timeout:{n}` for approval timeouts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from domain.decision import AuditEntry, Decision
from domain.effects import (
    DeleteDeployment,
    DeployModel,
    Effect,
    PublishEvent,
    RequestApproval,
    SendMessage,
    SetMirror,
    SetTraffic,
    TagModelVersion,
)
from domain.naming import deployment_name
from domain.policy import ModelPolicy, RingSettings
from promotion.commands import (
    ApprovalDecision,
    ApprovalTimedOut,
    DeploymentFailed,
    DeploymentReady,
    EndpointDrift,
    EndpointInSync,
    GateCheck,
    PausePromotion,
    PromoteNow,
    PromotionCommand,
    ResumePromotion,
    RollbackRequested,
    StartPromotion,
)
from promotion.drift import ExpectedEndpoint, expected_endpoint, expected_ring
from promotion.gates import (
    GateResult,
    LookResult,
    evaluate_canary,
    evaluate_staging,
    judge_bake_look,
    judge_canary_look,
)
from promotion.rings import evaluate_ring, ring_step_name
from promotion.shadow import SHADOW_STEP, judge_shadow
from promotion.state import (
    DEPLOYED,
    HISTORY_LIMIT,
    QUEUE_LIMIT,
    ApprovalRecord,
    Drift,
    GateRecord,
    HistoryEntry,
    Promotion,
    PromotionState,
    PromotionStatus,
    QueuedCandidate,
    ServingModel,
    StepRecord,
    TrafficWait,
)

Status = PromotionStatus

STAGING = "staging"
APPROVAL = "approval"
DEPLOY = "deploy"
BAKE = "bake"
SYSTEM = "system"
# Who pauses a promotion whose gates stay undecided (policy canary.on_exhausted).
ON_EXHAUSTED = "policy:on_exhausted"

# The statuses judged by scheduled gate checks.
CHECKED = frozenset(
    {Status.STAGING_GATE, Status.SHADOW, Status.CANARY, Status.PRODUCTION_BAKE, Status.RING}
)

STAGE_TAG = "retrain.stage"
PROMOTION_TAG = "retrain.promotion_id"


def canary_step_name(index: int) -> str:
    return f"canary-{index + 1}"


def check_message_id(promotion_id: str, step: str, attempt: int) -> str:
    return f"{promotion_id}:{step}:check:{attempt}"


def timeout_message_id(promotion_id: str, attempt: int) -> str:
    return f"{promotion_id}:{APPROVAL}:timeout:{attempt}"


def promotion_id_for(model: str, version: str, now: datetime) -> str:
    return f"{model}-v{version}-{now:%Y%m%dT%H%M%S}"


# --- observations ------------------------------------------------------------------------------


class DeploymentWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    deployment: str
    window_start: AwareDatetime
    window_end: AwareDatetime
    endpoint: str | None = None  # a later ring's endpoint; None: the model's own


class ObservationRequest(BaseModel):
    """What the service layer must read before `decide`, and where to put it on the command.

    kind "offline": read the offline metrics of `candidate_version` and of `champion_version`
    (None: no champion, leave `OfflineMetrics.champion` None) into `command.offline`.
    kind "live": read per-deployment live metrics, each arm over its own window, into
    `command.live` (LiveMetrics.arms keyed by deployment; its window = the union).
    kind "shadow": read the shadow's window (`arms`: the candidate's, then production's, over
    the same window) into `command.shadow` (ShadowMetrics: mirrored pairs and their agreement).
    If reading fails, leave the field None: the gate is inconclusive.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["offline", "live", "shadow"]
    candidate_version: str | None = None
    champion_version: str | None = None
    arms: tuple[DeploymentWindow, ...] = ()


def observation_needed(
    state: PromotionState, command: PromotionCommand, policy: ModelPolicy, now: datetime
) -> ObservationRequest | None:
    """The metrics `decide` will judge for this command, or None when it judges none."""
    known_good = state.last_known_good
    if isinstance(command, StartPromotion):
        if state.knows_version(command.candidate_version):
            return None
        if state.active is not None and policy.on_newer_candidate == "queue":
            return None
        # After a supersede the champion is the known-good one, so compare with that.
        return ObservationRequest(
            kind="offline",
            candidate_version=command.candidate_version,
            champion_version=known_good.version if known_good else None,
        )
    if not isinstance(command, GateCheck):
        return None
    promotion = state.active
    if _stale_check(promotion, command) is not None or promotion is None:
        return None
    if promotion.status == Status.STAGING_GATE:
        return ObservationRequest(
            kind="offline",
            candidate_version=promotion.candidate_version,
            champion_version=promotion.baseline.version if promotion.baseline else None,
        )
    start, end = promotion.step_started_at, max(now, promotion.step_started_at)
    if promotion.status == Status.RING:
        # The candidate alone, on the ring's own endpoint, over the ring's bake so far.
        return ObservationRequest(
            kind="live",
            arms=(
                DeploymentWindow(
                    deployment=promotion.candidate_deployment,
                    window_start=start,
                    window_end=end,
                    endpoint=promotion.rings[promotion.ring_index],
                ),
            ),
        )
    if promotion.status == Status.SHADOW and promotion.baseline is not None:
        return ObservationRequest(
            kind="shadow",
            arms=tuple(
                DeploymentWindow(deployment=name, window_start=start, window_end=end)
                for name in (promotion.candidate_deployment, promotion.baseline.deployment)
            ),
        )
    arms = [
        DeploymentWindow(
            deployment=promotion.candidate_deployment, window_start=start, window_end=end
        )
    ]
    production = _production_arm(promotion)
    if production is not None:
        if promotion.status == Status.PRODUCTION_BAKE and promotion.baseline_window:
            start, end = promotion.baseline_window
        arms.append(DeploymentWindow(deployment=production, window_start=start, window_end=end))
    return ObservationRequest(kind="live", arms=tuple(arms))


def overdue_message(state: PromotionState, now: datetime, grace: timedelta) -> SendMessage | None:
    """The active promotion's scheduled gate check or approval timeout, again, when it is
    overdue by more than `grace`: its delivery was lost, or sits in the lease of a process that
    crashed. Same payload (the same check id, which is what the machine judges), a new
    message id per minute: whichever copy comes second is stale and changes nothing."""
    active = state.active
    if active is None or active.paused or active.pending_check_id is None:
        return None
    if active.check_due_at is None or now - active.check_due_at <= grace:
        return None
    check_id = active.pending_check_id
    payload: BaseModel
    if active.status == Status.AWAITING_APPROVAL:
        message_type = "ApprovalTimedOut"
        payload = ApprovalTimedOut(promotion_id=active.id, step=APPROVAL, timeout_id=check_id)
    elif active.status in CHECKED:
        message_type = "GateCheck"
        payload = GateCheck(promotion_id=active.id, step=active.step, check_id=check_id)
    else:
        return None
    return SendMessage(
        message_type=message_type,
        message_id=f"{check_id}:resent:{now:%Y%m%dT%H%M}",
        payload=payload.model_dump(mode="json", exclude_none=True),
        promotion_id=active.id,
    )


# --- decide ------------------------------------------------------------------------------------


def decide(
    state: PromotionState, command: PromotionCommand, policy: ModelPolicy, now: datetime
) -> Decision[PromotionState]:
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"not a promotion command: {type(command).__name__}")
    return handler(_Transition(state, policy, now), command)


class _Transition:
    """Collects one decision: the evolving state, the effects and the audit entries."""

    def __init__(self, state: PromotionState, policy: ModelPolicy, now: datetime) -> None:
        self.original = state
        self.state = state
        self.policy = policy
        self.now = now
        self.effects: list[Effect] = []
        self.audit: list[AuditEntry] = []

    @property
    def promotion(self) -> Promotion:
        assert self.state.active is not None
        return self.state.active

    def update(self, **changes: Any) -> None:
        promotion = self.promotion.model_copy(update={**changes, "updated_at": self.now})
        self.state = self.state.model_copy(update={"active": promotion})

    def set_state(self, **changes: Any) -> None:
        self.state = self.state.model_copy(update=changes)

    def emit(self, *effects: Effect) -> None:
        self.effects.extend(effects)

    def record(self, action: str, **detail: Any) -> None:
        active = self.state.active
        self.audit.append(
            AuditEntry(
                action=action,
                promotion_id=active.id if active else None,
                from_state=active.status if active else None,
                to_state=active.status if active else None,
                detail=detail,
            )
        )

    def move(self, status: Status, step: str, cause: str, by: str = SYSTEM, **detail: Any) -> None:
        before = self.promotion.status
        self.update(
            status=status,
            step=step,
            steps=(
                *self.promotion.steps,
                StepRecord(status=status, step=step, at=self.now, caused_by=by, cause=cause),
            ),
        )
        self.audit.append(
            AuditEntry(
                action=f"promotion.{status}",
                promotion_id=self.promotion.id,
                from_state=before,
                to_state=status,
                detail={"step": step, "cause": cause, "caused_by": by, **detail},
            )
        )

    def tag(self, version: str, stage: str) -> None:
        self.emit(
            TagModelVersion(
                model_version=version, tags={STAGE_TAG: stage, PROMOTION_TAG: self.promotion.id}
            )
        )

    def event(self, event_type: str, **data: Any) -> None:
        promotion = self.promotion
        self.emit(
            PublishEvent(
                event_type=event_type,
                data={
                    "model": self.policy.model,
                    "promotion_id": promotion.id,
                    "candidate_version": promotion.candidate_version,
                    **data,
                },
            )
        )

    def ignore(self, command: BaseModel, reason: str, action: str = "command.ignored") -> Decision:
        active = self.original.active
        entry = AuditEntry(
            action=action,
            promotion_id=active.id if active else None,
            from_state=active.status if active else None,
            to_state=active.status if active else None,
            detail={"command": type(command).__name__, "reason": reason},
        )
        return Decision(state=self.original, audit=[entry], ignored=reason)

    def done(self) -> Decision[PromotionState]:
        return Decision(state=self.state, effects=self.effects, audit=self.audit)


def _matching(t: _Transition, promotion_id: str | None) -> str | None:
    """Why a command naming `promotion_id` does not concern the active promotion, else None."""
    active = t.state.active
    if active is None:
        return "no active promotion"
    if promotion_id is not None and promotion_id != active.id:
        return f"promotion {promotion_id} is not the active one ({active.id})"
    return None


def _stale_check(promotion: Promotion | None, check: GateCheck) -> str | None:
    if promotion is None or promotion.id != check.promotion_id:
        return "not the active promotion"
    if promotion.status not in CHECKED:
        return f"no gate check expected in {promotion.status}"
    if check.step != promotion.step or check.check_id != promotion.pending_check_id:
        return f"stale check {check.check_id} (expected {promotion.pending_check_id})"
    return None


# --- starting ----------------------------------------------------------------------------------


def _on_start(t: _Transition, command: StartPromotion) -> Decision[PromotionState]:
    repeat = t.state.knows_version(command.candidate_version)
    if repeat is not None:
        return t.ignore(command, repeat)
    if t.state.active is not None:
        if t.policy.on_newer_candidate == "queue":
            queued = (
                *t.state.queued,
                QueuedCandidate(
                    version=command.candidate_version, run_id=command.run_id, queued_at=t.now
                ),
            )
            dropped = queued[:-QUEUE_LIMIT] if len(queued) > QUEUE_LIMIT else ()
            t.set_state(queued=queued[-QUEUE_LIMIT:])
            t.record(
                "promotion.queued",
                version=command.candidate_version,
                dropped=[item.version for item in dropped],
            )
            return t.done()
        _rollback(t, f"superseded by v{command.candidate_version}", SYSTEM, start_next=False)
    _create(t, command.candidate_version, command.run_id)
    _judge_staging(t, command.offline)
    return t.done()


def _create(t: _Transition, version: str, run_id: str | None) -> None:
    promotion_id = promotion_id_for(t.policy.model, version, t.now)
    t.set_state(
        active=Promotion(
            id=promotion_id,
            candidate_version=version,
            candidate_deployment=deployment_name(t.policy.model, version),
            run_id=run_id,
            status=Status.CANDIDATE,
            step=STAGING,
            canary_steps=tuple(t.policy.canary.steps),
            rings=tuple(ring.endpoint for ring in t.policy.rings[1:]),
            ring_settings=tuple(t.policy.rings[1:]),
            step_started_at=t.now,
            baseline=t.state.last_known_good,
            started_at=t.now,
            updated_at=t.now,
        )
    )
    t.audit.append(
        AuditEntry(
            action="promotion.started",
            promotion_id=promotion_id,
            to_state=Status.CANDIDATE,
            detail={"candidate_version": version, "run_id": run_id},
        )
    )
    t.event("promotion.started", run_id=run_id)
    t.move(Status.STAGING_GATE, STAGING, "candidate registered")


def _start_next_queued(t: _Transition) -> None:
    if not t.state.queued or t.state.active is not None:
        return
    head, *rest = t.state.queued
    t.set_state(queued=tuple(rest))
    _create(t, head.version, head.run_id)
    # Its offline metrics are read for a check sent now (decide itself reads nothing).
    t.update(check_attempt=1)
    _schedule_check(t, STAGING, t.now)


def _schedule_check(t: _Transition, step: str, at: datetime) -> None:
    promotion = t.promotion
    check_id = check_message_id(promotion.id, step, promotion.check_attempt)
    t.update(pending_check_id=check_id, check_due_at=at)
    t.emit(
        SendMessage(
            message_type="GateCheck",
            message_id=check_id,
            payload=GateCheck(promotion_id=promotion.id, step=step, check_id=check_id).model_dump(
                mode="json", exclude_none=True
            ),
            promotion_id=promotion.id,
            not_before=at,
        )
    )


def _record_gate(t: _Transition, result: GateResult, *, replace_last: bool = False) -> None:
    """Keep the check's evidence on the promotion; `replace_last`: in place of the previous
    record (a wait that may last for days keeps one record, not one per check)."""
    promotion = t.promotion
    kept = promotion.gates[:-1] if replace_last and promotion.gates else promotion.gates
    t.update(
        gates=(
            *kept,
            GateRecord(
                step=promotion.step,
                check_id=promotion.pending_check_id,
                outcome=result.outcome,
                at=t.now,
                evidence=result.evidence,
            ),
        )
    )
    action = {"pass": "gate.passed", "fail": "gate.failed", "inconclusive": "gate.inconclusive"}
    t.record(
        action[result.outcome],
        step=promotion.step,
        check_id=promotion.pending_check_id,
        evidence=[item.model_dump(mode="json") for item in result.evidence],
    )


# --- staging and approval ----------------------------------------------------------------------


def _judge_staging(t: _Transition, offline: Any) -> None:
    baseline = t.promotion.baseline
    result = evaluate_staging(
        t.policy.staging.gates, offline, champion_version=baseline.version if baseline else None
    )
    _record_gate(t, result)
    if result.outcome == "fail":
        _finish(t, Status.REJECTED, f"staging gate failed: {result.reasons}", tag="rejected")
        return
    if result.outcome == "inconclusive":
        count = t.promotion.inconclusive + 1
        if count >= t.policy.staging.max_attempts:
            _finish(
                t,
                Status.REJECTED,
                f"staging gate inconclusive after {count} attempts: {result.reasons}",
                tag="rejected",
            )
            return
        t.update(inconclusive=count, check_attempt=t.promotion.check_attempt + 1)
        _schedule_check(t, STAGING, t.now + t.policy.staging.retry_delay)
        return
    t.update(inconclusive=0, pending_check_id=None, check_due_at=None)
    t.tag(t.promotion.candidate_version, "staging")
    if t.policy.approval.required:
        _enter_approval(t)
    else:
        _enter_deploying(t, "staging gate passed")


def _enter_approval(t: _Transition) -> None:
    expires_at = t.now + t.policy.approval.timeout
    t.update(approval_expires_at=expires_at, check_attempt=1)
    t.move(Status.AWAITING_APPROVAL, APPROVAL, "staging gate passed; approval required")
    promotion = t.promotion
    last_gate = promotion.gates[-1] if promotion.gates else None
    t.emit(
        RequestApproval(
            promotion_id=promotion.id,
            step=APPROVAL,
            candidate_version=promotion.candidate_version,
            approvers=list(t.policy.approval.approvers),
            expires_at=expires_at,
            evidence={"staging": [item.model_dump(mode="json") for item in last_gate.evidence]}
            if last_gate
            else {},
        )
    )
    _schedule_timeout(t, expires_at)


def _schedule_timeout(t: _Transition, at: datetime) -> None:
    promotion = t.promotion
    message_id = timeout_message_id(promotion.id, promotion.check_attempt)
    t.update(pending_check_id=message_id, check_due_at=at)
    t.emit(
        SendMessage(
            message_type="ApprovalTimedOut",
            message_id=message_id,
            payload=ApprovalTimedOut(
                promotion_id=promotion.id, step=APPROVAL, timeout_id=message_id
            ).model_dump(mode="json"),
            promotion_id=promotion.id,
            not_before=at,
        )
    )


def _on_approval(t: _Transition, command: ApprovalDecision) -> Decision[PromotionState]:
    refused = _matching(t, command.promotion_id)
    promotion = t.state.active
    if refused is None and promotion is not None:
        allowed = {name.casefold() for name in t.policy.approval.approvers}
        if promotion.status != Status.AWAITING_APPROVAL:
            refused = f"no approval expected in {promotion.status}"
        elif command.step != promotion.step:
            refused = f"step {command.step!r} is not the current step {promotion.step!r}"
        elif command.candidate_version != promotion.candidate_version:
            refused = (
                f"version {command.candidate_version} is not the candidate "
                f"{promotion.candidate_version}"
            )
        elif command.authorized_by is None and command.approver.casefold() not in allowed:
            refused = f"{command.approver} is not an allowed approver"
        elif promotion.paused:
            refused = "promotion is paused: resume it, then answer again"
    if refused is not None:
        return t.ignore(command, refused, action="approval.refused")
    t.update(
        approval=ApprovalRecord(
            step=command.step,
            decision=command.decision,
            approver=command.approver,
            comment=command.comment,
            at=t.now,
        )
    )
    cause = f"{command.decision} by {command.approver}" + (
        f": {command.comment}" if command.comment else ""
    )
    if command.decision == "approve":
        _enter_deploying(t, cause, by=command.approver)
    else:
        _finish(t, Status.REJECTED, cause, tag="rejected", by=command.approver)
    return t.done()


def _on_approval_timeout(t: _Transition, command: ApprovalTimedOut) -> Decision[PromotionState]:
    reason = _matching(t, command.promotion_id)
    promotion = t.state.active
    if reason is None and promotion is not None:
        if promotion.status != Status.AWAITING_APPROVAL or command.step != promotion.step:
            reason = f"no approval pending for step {command.step!r}"
        elif command.timeout_id != promotion.pending_check_id:
            # Only the timeout the machine scheduled last counts (a resume reschedules it); one
            # that names none was not scheduled by the machine.
            reason = f"stale timeout {command.timeout_id} (expected {promotion.pending_check_id})"
        elif promotion.paused:
            reason = "promotion is paused: timeout held, resume reschedules it"
    if reason is not None:
        return t.ignore(command, reason)
    on_timeout = t.policy.approval.on_timeout
    t.update(
        approval=ApprovalRecord(
            step=command.step, decision=on_timeout, approver="policy:on_timeout", at=t.now
        )
    )
    cause = f"approval timed out: policy says {on_timeout}"
    if on_timeout == "approve":
        _enter_deploying(t, cause)
    else:
        _finish(t, Status.REJECTED, cause, tag="rejected")
    return t.done()


# --- deployment and canary ---------------------------------------------------------------------


def _enter_deploying(t: _Transition, cause: str, by: str = SYSTEM) -> None:
    t.update(pending_check_id=None, check_due_at=None, check_attempt=0, inconclusive=0)
    t.move(Status.DEPLOYING, DEPLOY, cause, by)
    t.emit(
        DeployModel(
            model_version=t.promotion.candidate_version, deployment=t.promotion.candidate_deployment
        )
    )


def _on_deployment_ready(t: _Transition, command: DeploymentReady) -> Decision[PromotionState]:
    reason = _matching(t, command.promotion_id)
    promotion = t.state.active
    if reason is None and promotion is not None:
        if promotion.status not in (Status.DEPLOYING, Status.RING):
            reason = f"not deploying ({promotion.status})"
        elif command.deployment != promotion.candidate_deployment:
            reason = f"{command.deployment} is not the candidate's deployment"
        elif command.endpoint != _deploying_on(promotion):
            reason = f"not deploying on {command.endpoint or 'the first ring'}"
        elif promotion.deployment_ready:
            reason = "deployment already reported ready"
    if reason is not None:
        return t.ignore(command, reason)
    t.update(deployment_ready=True)
    if t.promotion.status == Status.RING:
        if t.promotion.paused:
            t.record("deployment.ready", endpoint=command.endpoint, held="promotion is paused")
        else:
            t.record("deployment.ready", endpoint=command.endpoint)
            _move_ring_traffic(t, "deployment ready")
        return t.done()
    if t.promotion.paused:
        t.record("deployment.ready", held="promotion is paused; resume starts the rollout")
    else:
        t.record("deployment.ready")
        _start_rollout(t, "deployment ready")
    return t.done()


def _start_rollout(t: _Transition, cause: str) -> None:
    if t.policy.shadow is not None:
        if t.promotion.baseline is not None:
            _enter_shadow(t, cause)
            return
        # Nothing serves live traffic to mirror, nor answers to agree with.
        t.record("shadow.skipped", reason="no production model: no live traffic to mirror")
    _start_live(t, cause)


def _start_live(t: _Transition, cause: str) -> None:
    if t.promotion.baseline is None or not t.promotion.canary_steps:
        why = (
            "no production model: no canary" if t.promotion.baseline is None else "no canary steps"
        )
        _go_to_production(t, f"{cause}; {why}")
    else:
        _enter_canary_step(t, 0, cause)


def _enter_canary_step(t: _Transition, index: int, cause: str, by: str = SYSTEM) -> None:
    promotion = t.promotion
    baseline = promotion.baseline
    assert baseline is not None
    weight = promotion.canary_steps[index]
    step = canary_step_name(index)
    t.emit(
        SetTraffic(
            traffic={baseline.deployment: 100 - weight, promotion.candidate_deployment: weight}
        )
    )
    t.update(
        step_index=index,
        traffic_weight=weight,
        step_started_at=t.now,
        step_deadline=t.now + t.policy.canary.max_step_duration,
        check_attempt=1,
        inconclusive=0,
    )
    t.move(Status.CANARY, step, cause, by, traffic=weight)
    _schedule_check(t, step, t.now + t.policy.canary.bake)


# --- shadow: the candidate answers a mirrored copy of live traffic, nobody sees it ----------------


def _had_shadow(promotion: Promotion) -> bool:
    return any(step.status == Status.SHADOW for step in promotion.steps)


def _enter_shadow(t: _Transition, cause: str) -> None:
    shadow = t.policy.shadow
    assert shadow is not None
    promotion = t.promotion
    t.emit(SetMirror(mirror={promotion.candidate_deployment: shadow.percent}))
    t.update(
        shadow_percent=shadow.percent,
        step_started_at=t.now,
        step_deadline=t.now + shadow.duration + shadow.max_wait,
        check_attempt=1,
        inconclusive=0,
    )
    t.move(Status.SHADOW, SHADOW_STEP, cause, mirror=shadow.percent)
    _schedule_check(t, SHADOW_STEP, t.now + shadow.duration)


def _judge_shadow(t: _Transition, command: GateCheck) -> None:
    """A shadow check (promotion/shadow.py): too few samples wait (every shadow.check_every,
    until the stage's deadline); pass -> mirror off, the first live step; fail -> rollback
    (mirror off, candidate removed, production untouched); undecided or out of time ->
    canary.on_exhausted (promote only on a complete, undecided look)."""
    shadow = t.policy.shadow
    promotion = t.promotion
    if shadow is None:
        # The policy dropped its shadow meanwhile: this promotion's shadow ends here.
        t.record("shadow.ended", step=promotion.step, reason="policy has no shadow any more")
        _leave_shadow(t, "policy has no shadow stage any more")
        return
    deadline = promotion.step_deadline or (
        promotion.step_started_at + shadow.duration + shadow.max_wait
    )
    look = judge_shadow(shadow.gates, command.shadow)
    waiting = look.outcome == "wait"
    _record_gate(t, look.result, replace_last=waiting and promotion.inconclusive > 0)
    if waiting and t.now < deadline:
        _wait_for_samples(t, shadow.check_every, deadline)
        return
    if look.outcome == "fail":
        _rollback(t, f"shadow gate failed: {look.result.reasons}", SYSTEM)
        return
    if look.outcome == "pass":
        _leave_shadow(t, "shadow gate passed")
        return
    complete = look.outcome == "undecided"
    mode, why = _exhausted(
        t.policy.canary.on_exhausted,
        complete,
        "shadow undecided with its samples"
        if complete
        else f"shadow short of samples when its time ran out ({look.result.reasons})",
    )
    t.record("gate.exhausted", step=promotion.step, on_exhausted=mode, complete=complete)
    if mode == "rollback":
        _rollback(t, f"{why}: policy on_exhausted=rollback", SYSTEM)
    elif mode == "promote":
        _leave_shadow(t, f"{why}: policy on_exhausted=promote")
    else:
        _pause_exhausted(t, why)


def _wait_for_samples(t: _Transition, every: timedelta, deadline: datetime) -> None:
    """Too few samples to look yet (a shadow or a canary step): look again after `every`,
    at the latest at the stage's deadline; the audit keeps one waiting record per stage."""
    promotion = t.promotion
    count = promotion.inconclusive + 1
    due = min(t.now + every, deadline)
    t.update(inconclusive=count, check_attempt=promotion.check_attempt + 1)
    t.record(
        "gate.waiting",
        step=promotion.step,
        checks=count,
        deadline=deadline.isoformat(),
        next_check_at=due.isoformat(),
    )
    _schedule_check(t, promotion.step, due)


def _exhausted(mode: str, complete: bool, why: str) -> tuple[str, str]:
    """What undecided gates do (`on_exhausted`), and why. Missing or too few metrics never
    promote, whatever the policy says: they pause."""
    if mode == "promote" and not complete:
        return "pause", f"{why}; on_exhausted=promote needs every metric read and the samples"
    return mode, why


def _leave_shadow(t: _Transition, cause: str) -> None:
    """Mirror off, then the first live step (its traffic map follows in the same lane)."""
    t.emit(SetMirror(mirror={}))
    t.update(shadow_percent=0, pending_check_id=None, check_due_at=None, step_deadline=None)
    _start_live(t, f"shadow: {cause}")


def _go_to_production(t: _Transition, cause: str, by: str = SYSTEM) -> None:
    promotion = t.promotion
    baseline = promotion.baseline
    t.move(Status.PROMOTING, promotion.step, cause, by)
    # A first model has nothing to hold back.
    holdback = t.policy.production_holdback if baseline is not None else 0
    traffic = {promotion.candidate_deployment: 100 - holdback}
    if baseline is not None:
        # Keep the old deployment through the bake: it is the rollback target, and with a
        # holdback it serves its share, the bake's concurrent comparison.
        traffic[baseline.deployment] = holdback
    t.emit(SetTraffic(traffic=traffic))
    # Without a holdback the canary arm's last window is the baseline the bake compares with.
    window = (
        (promotion.step_started_at, t.now)
        if promotion.status == Status.CANARY and not holdback
        else None
    )
    t.set_state(
        champion=ServingModel(
            version=promotion.candidate_version,
            deployment=promotion.candidate_deployment,
            since=t.now,
        )
    )
    bake_end = t.now + t.policy.production_bake
    t.update(
        traffic_weight=100 - holdback,
        holdback=holdback,
        bake_duration=t.policy.production_bake,
        step_started_at=t.now,
        # With a holdback: when the bake ends (its looks' clock; a pause stops it).
        step_deadline=bake_end if holdback else None,
        check_attempt=1,
        inconclusive=0,
        baseline_window=window,
    )
    t.tag(promotion.candidate_version, "production")
    t.event("promotion.promoted", traffic=traffic)
    held = f"; {holdback}% held back on v{baseline.version}" if baseline and holdback else ""
    t.move(
        Status.PRODUCTION_BAKE,
        BAKE,
        f"{100 - holdback}% on the candidate{held}",
        by,
        traffic=100 - holdback,
    )
    # With a holdback the bake looks every canary.bake (a test for harm), else once at its end.
    due = min(t.now + t.policy.canary.bake, bake_end) if holdback else bake_end
    _schedule_check(t, BAKE, due)


# --- rings: the later endpoints, one by one ------------------------------------------------------


def _deploying_on(promotion: Promotion) -> str | None:
    """The endpoint the candidate is being deployed on (None: the model's own)."""
    return promotion.rings[promotion.ring_index] if promotion.status == Status.RING else None


def _rings_deployed(promotion: Promotion) -> tuple[str, ...]:
    """The later rings the candidate was deployed on (their traffic moved, or about to)."""
    if promotion.status != Status.RING:
        return ()
    return promotion.rings[: promotion.ring_index + 1]


def _ring_settings(t: _Transition, endpoint: str) -> RingSettings:
    """A later ring's settings as fixed when the promotion started (a ring edited or removed
    from the policy meanwhile is walked as it was); a state saved before they were kept: the
    policy's, else the defaults."""
    kept = next((ring for ring in t.promotion.ring_settings if ring.endpoint == endpoint), None)
    return kept or t.policy.ring(endpoint) or RingSettings(endpoint=endpoint)


def _ring_bake(t: _Transition, endpoint: str) -> timedelta:
    bake = _ring_settings(t, endpoint).bake
    return bake if bake is not None else t.policy.production_bake


def _first_ring_done(t: _Transition, cause: str, by: str = SYSTEM) -> None:
    """The first ring's production bake is over (passed, promoted now, or a first model's
    bake passed without traffic): the later rings follow one by one, else it is completed."""
    if t.promotion.rings:
        _enter_ring(t, 0, f"{t.promotion.step}: {cause}", by=by)
    else:
        _complete(t, cause, by=by)


def _enter_ring(t: _Transition, index: int, cause: str, by: str = SYSTEM) -> None:
    """The candidate deployed on the later ring `index`; its traffic follows when it is ready.
    The first ring keeps its known-good deployment (with no traffic) as its way back."""
    promotion = t.promotion
    endpoint = promotion.rings[index]
    if index == 0 and promotion.holdback and promotion.baseline is not None:
        # The first ring's bake is over: its holdback's share goes to the candidate too.
        t.emit(
            SetTraffic(
                traffic={promotion.candidate_deployment: 100, promotion.baseline.deployment: 0}
            )
        )
    t.update(
        ring_index=index,
        holdback=0,
        traffic_weight=100,
        deployment_ready=False,
        pending_check_id=None,
        check_due_at=None,
        step_deadline=None,
        check_attempt=0,
        inconclusive=0,
        traffic_wait=None,
    )
    t.move(Status.RING, ring_step_name(index), cause, by, endpoint=endpoint)
    t.emit(
        DeployModel(
            model_version=promotion.candidate_version,
            deployment=promotion.candidate_deployment,
            endpoint=endpoint,
        )
    )


def _move_ring_traffic(t: _Transition, cause: str) -> None:
    """All of the ring's traffic on the candidate (its known-good kept, with none, as the way
    back); the ring's bake starts."""
    promotion = t.promotion
    endpoint = promotion.rings[promotion.ring_index]
    traffic = {promotion.candidate_deployment: 100}
    own = t.state.rings.get(endpoint)
    if own is not None and own.deployment != promotion.candidate_deployment:
        traffic[own.deployment] = 0
    t.emit(SetTraffic(traffic=traffic, endpoint=endpoint))
    t.update(
        rings_moved=promotion.ring_index + 1,
        step_started_at=t.now,
        check_attempt=1,
        inconclusive=0,
    )
    t.record("ring.traffic_moved", endpoint=endpoint, traffic=traffic, cause=cause)
    t.event("promotion.ring_moved", endpoint=endpoint, ring=promotion.ring_index + 2)
    _schedule_check(t, promotion.step, t.now + _ring_bake(t, endpoint))


def _judge_ring(t: _Transition, command: GateCheck) -> None:
    """A later ring's check: pass -> the next ring, or completed after the last; fail ->
    every ring that moved rolls back; too few samples or metrics unread -> the bake extended
    by the ring's bake (canary.max_extensions), then canary.on_exhausted (never a promote:
    missing data never passes)."""
    promotion = t.promotion
    endpoint = promotion.rings[promotion.ring_index]
    ring = _ring_settings(t, endpoint)
    result = evaluate_ring(
        ring, command.live, promotion.candidate_deployment, t.policy.canary.min_samples_per_arm
    )
    _record_gate(t, result)
    if result.outcome == "fail":
        _rollback(t, f"{promotion.step} ({endpoint}) gate failed: {result.reasons}", SYSTEM)
    elif result.outcome == "pass":
        _step_passed(t, f"gate passed on {endpoint}")
    elif promotion.inconclusive < t.policy.canary.max_extensions:
        count = promotion.inconclusive + 1
        t.update(inconclusive=count, check_attempt=promotion.check_attempt + 1)
        t.record("gate.extended", step=promotion.step, extension=count, endpoint=endpoint)
        _schedule_check(t, promotion.step, t.now + _ring_bake(t, endpoint))
    else:
        tries = promotion.inconclusive
        why = f"{promotion.step} ({endpoint}) inconclusive after {tries} extensions"
        mode = "rollback" if t.policy.canary.on_exhausted == "rollback" else "pause"
        t.record("gate.exhausted", step=promotion.step, on_exhausted=mode, complete=False)
        if mode == "rollback":
            _rollback(t, f"{why}: {result.reasons}", SYSTEM)
        else:
            _pause_exhausted(t, f"{why}: {result.reasons}")


def _on_gate_check(t: _Transition, command: GateCheck) -> Decision[PromotionState]:
    promotion = t.state.active
    reason = _stale_check(promotion, command)
    if reason is None and promotion is not None and promotion.paused:
        reason = "promotion is paused: check held, resume reschedules it"
    if reason is not None or promotion is None:
        return t.ignore(command, reason or "no active promotion")
    if promotion.status == Status.STAGING_GATE:
        _judge_staging(t, command.offline)
        return t.done()
    if promotion.status == Status.CANARY:
        _judge_canary_step(t, command)
        return t.done()
    if promotion.status == Status.SHADOW:
        _judge_shadow(t, command)
        return t.done()
    if promotion.status == Status.RING:
        _judge_ring(t, command)
        return t.done()
    if promotion.holdback and promotion.baseline is not None:
        _judge_holdback_bake(t, command)
        return t.done()
    result = evaluate_canary(
        t.policy.canary, command.live, promotion.candidate_deployment, _production_arm(promotion)
    )
    waiting = is_first_model_bake(promotion) and result.outcome == "inconclusive"
    if waiting and t.policy.first_model.bake_without_traffic != "rollback":
        _first_model_without_traffic(t, command, result)
        return t.done()
    if waiting:
        _note_traffic_wait(t, command)
    _record_gate(t, result)
    if result.outcome == "fail":
        _rollback(t, f"{promotion.step} gate failed: {result.reasons}", SYSTEM)
    elif result.outcome == "pass":
        _step_passed(t, "gate passed")
    else:
        _bake_undecided(t, result, waiting)
    return t.done()


def _bake_undecided(t: _Transition, result: GateResult, waiting: bool = False) -> None:
    """The bake could not pass yet (too few samples, a metric not read): extend it by
    canary.bake, up to canary.max_extensions, then canary.on_exhausted (`promote` only with
    every metric read)."""
    promotion = t.promotion
    if t.promotion.inconclusive < t.policy.canary.max_extensions:
        count = t.promotion.inconclusive + 1
        t.update(inconclusive=count, check_attempt=t.promotion.check_attempt + 1)
        t.record(
            "gate.extended",
            step=promotion.step,
            extension=count,
            max_extensions=t.policy.canary.max_extensions,
        )
        _schedule_check(t, promotion.step, t.now + t.policy.canary.bake)
    else:
        exhausted = t.policy.canary.on_exhausted
        why = f"{promotion.step} inconclusive after {t.promotion.inconclusive} extensions"
        if waiting:
            # The first model's own setting: it names this case, and wins over on_exhausted.
            exhausted = "rollback"
            why += ": policy first_model.bake_without_traffic=rollback"
        complete = _metrics_complete(result)
        exhausted, why = _exhausted(exhausted, complete, why)
        t.record("gate.exhausted", step=promotion.step, on_exhausted=exhausted, complete=complete)
        if exhausted == "rollback":
            _rollback(t, f"{why}: {result.reasons}", SYSTEM)
        elif exhausted == "promote":
            _step_passed(t, f"{why}: policy on_exhausted=promote")
        else:
            _pause_exhausted(t, f"{why}: {result.reasons}")


def _judge_holdback_bake(t: _Transition, command: GateCheck) -> None:
    """A production bake check with a concurrent holdback (promotion.gates `judge_bake_look`):
    harm shown -> rollback; the bake still running -> the next look after canary.bake (at
    most its end); ended without harm and with the candidate's samples -> completed; ended
    without them -> extensions, then on_exhausted."""
    promotion = t.promotion
    assert promotion.baseline is not None and promotion.step_deadline is not None
    # The bake's own length, fixed when it started (the policy's for a state saved before).
    duration = promotion.bake_duration or t.policy.production_bake
    # The look's place on the bake's clock is when it was scheduled, not when it arrived: a
    # check delivered early or late judges as the same look (redelivery changes nothing).
    at = promotion.check_due_at or t.now
    left = promotion.step_deadline - at
    fraction = 1.0 if duration <= timedelta(0) else 1 - left / duration
    # Never before the last look: the alpha spent so far cannot be taken back.
    earlier = [
        item.fraction
        for look in promotion.looks
        if look.step == BAKE
        for item in look.gates.values()
    ]
    fraction = max([fraction, *earlier])
    bake_every = t.policy.canary.bake
    look = judge_bake_look(
        t.policy.canary,
        command.live,
        promotion.candidate_deployment,
        promotion.baseline.deployment,
        fraction=fraction,
        ended=at >= promotion.step_deadline,
        looks=promotion.looks,
        holdback=promotion.holdback,
        planned_looks=max(1, -(-duration // bake_every)) if bake_every else 1,
    )
    _record_gate(t, look.result)
    if look.look is not None:
        t.update(looks=(*promotion.looks, look.look))
        t.record(
            "gate.look",
            step=promotion.step,
            look=sum(1 for item in t.promotion.looks if item.step == BAKE),
            outcome=look.outcome,
            complete=look.complete,
            gates={m: item.model_dump(mode="json") for m, item in look.look.gates.items()},
        )
    if look.outcome == "fail":
        _rollback(t, f"{promotion.step} gate failed: {look.result.reasons}", SYSTEM)
    elif look.outcome == "pass":
        _step_passed(t, "no harm shown against the holdback")
    elif look.outcome == "continue":
        t.update(check_attempt=promotion.check_attempt + 1)
        _schedule_check(t, BAKE, min(t.now + bake_every, promotion.step_deadline))
    else:
        _bake_undecided(t, look.result)


def _metrics_complete(result: GateResult) -> bool:
    """Every gate tested on data read (a gate without its metric or samples has no values)."""
    return all(
        item.outcome == "pass" or (item.gate != "samples" and bool(item.values))
        for item in result.evidence
    )


def _judge_canary_step(t: _Transition, command: GateCheck) -> None:
    """A canary step's check under the promotion's sequential design (promotion.gates
    `judge_canary_look`): wait for the step's samples (checked every canary.bake, at most
    canary.max_step_duration), then look: pass or continue -> next step (or production),
    fail -> rollback, undecided at the end -> canary.on_exhausted."""
    promotion = t.promotion
    # The steps this promotion started with: a policy edited meanwhile must not re-plan the
    # looks of a ramp that walks its own copy of the steps.
    canary = t.policy.canary.model_copy(update={"steps": list(promotion.canary_steps)})
    assert promotion.baseline is not None
    deadline = promotion.step_deadline or promotion.step_started_at + canary.max_step_duration
    look = judge_canary_look(
        canary,
        command.live,
        promotion.candidate_deployment,
        promotion.baseline.deployment,
        step_index=promotion.step_index,
        looks=promotion.looks,
        carried=promotion.canary_totals,
        out_of_time=t.now >= deadline,
    )
    waiting = look.outcome == "wait"
    # A wait keeps one record per step, not one per check.
    _record_gate(t, look.result, replace_last=waiting and promotion.inconclusive > 0)
    if waiting:
        _wait_for_samples(t, canary.bake, deadline)
        return
    if look.look is not None:  # None: out of time with no metrics to look at
        t.update(looks=(*promotion.looks, look.look))
        t.record(
            "gate.look",
            step=promotion.step,
            look=len(promotion.looks) + 1,
            outcome=look.outcome,
            complete=look.complete,
            gates={m: item.model_dump(mode="json") for m, item in look.look.gates.items()},
        )
    if look.outcome == "fail":
        _rollback(t, f"{promotion.step} gate failed: {look.result.reasons}", SYSTEM)
        return
    if look.outcome in ("pass", "continue"):
        _carry_totals(t, look)
        cause = (
            "gate passed"
            if look.outcome == "pass"
            else "samples of the step reached, undecided: the next step looks again"
        )
        _step_passed(t, cause)
        return
    mode = canary.on_exhausted
    why = (
        f"{promotion.step} undecided with the design's full samples"
        if look.complete
        else f"{promotion.step} undecided when its time ran out ({look.result.reasons})"
    )
    if mode == "promote" and not look.complete:
        # Missing or too few metrics never promote, whatever the policy says.
        mode = "pause"
        why += "; on_exhausted=promote needs every metric read and the full samples"
    t.record("gate.exhausted", step=promotion.step, on_exhausted=mode, complete=look.complete)
    if mode == "rollback":
        _rollback(t, f"{why}: policy on_exhausted=rollback", SYSTEM)
    elif mode == "promote":
        _carry_totals(t, look)
        _step_passed(t, f"{why}: policy on_exhausted=promote")
    else:
        _pause_exhausted(t, why)


def _carry_totals(t: _Transition, look: LookResult) -> None:
    """The step's cumulative counts, for the next step's looks (latencies are per window)."""
    t.update(
        canary_totals={
            role: arm.model_copy(update={"latency_ms": []}) for role, arm in look.totals.items()
        }
    )


def _pause_exhausted(t: _Transition, why: str) -> None:
    """Undecided: a person decides (resume waits another max_step_duration; promote-now or
    rollback end it). The pending check stays: resume reschedules it."""
    t.update(paused=True, paused_by=ON_EXHAUSTED, pause_reason=why, paused_at=t.now)
    t.record("promotion.paused", requested_by=ON_EXHAUSTED, reason=why)
    t.event("promotion.paused", reason=why, paused_by=ON_EXHAUSTED)


def is_first_model_bake(promotion: Promotion) -> bool:
    """The production bake of a first model: no known-good model before it, nothing to
    compare it with and nothing to roll back to."""
    return promotion.status == Status.PRODUCTION_BAKE and promotion.baseline is None


def _note_traffic_wait(t: _Transition, command: GateCheck) -> TrafficWait:
    """Record on the promotion how much traffic the first model's bake has and needs."""
    promotion = t.promotion
    arm = command.live.arms.get(promotion.candidate_deployment) if command.live else None
    before = promotion.traffic_wait
    wait = TrafficWait(
        since=before.since if before else t.now,
        checks=before.checks + 1 if before else 1,
        requests=arm.requests if arm else None,
        errors=arm.errors if arm else None,
        needed=t.policy.canary.min_samples_per_arm,
        checked_at=t.now,
    )
    t.update(traffic_wait=wait)
    return wait


def _first_model_without_traffic(t: _Transition, command: GateCheck, result: GateResult) -> None:
    """A first model's bake short of traffic, under first_model.bake_without_traffic `hold`
    or `pass`: no extension is used up (it has no end); `pass` completes it when what it
    served had no error, anything else (errors, metrics unreadable) holds it. Missing data
    never completes it: `pass` needs the candidate's counts read."""
    mode = t.policy.first_model.bake_without_traffic
    still_waiting = t.promotion.traffic_wait is not None
    wait = _note_traffic_wait(t, command)
    _record_gate(t, result, replace_last=still_waiting)
    served = "unreadable" if wait.requests is None else f"{wait.requests} of {wait.needed}"
    if mode == "pass" and wait.errors == 0:
        t.record("bake.passed_without_traffic", requests=wait.requests, needed=wait.needed)
        _first_ring_done(
            t,
            f"{served} requests, no errors: policy first_model.bake_without_traffic=pass",
        )
        return
    t.update(check_attempt=t.promotion.check_attempt + 1)
    _schedule_check(t, BAKE, t.now + t.policy.canary.bake)
    t.record(
        "bake.waiting_for_traffic",
        requests=wait.requests,
        errors=wait.errors,
        needed=wait.needed,
        checks=wait.checks,
        since=wait.since.isoformat(),
        next_check_at=t.promotion.check_due_at.isoformat() if t.promotion.check_due_at else None,
        bake_without_traffic=mode,
    )


def _production_arm(promotion: Promotion) -> str | None:
    """The deployment the candidate is compared with; None when there is none to compare.

    In the canary: the known-good deployment, live beside the candidate. In the production
    bake: the same deployment over the last canary step's window (it has no traffic now);
    without a canary (first model, no steps) the bake has no baseline.
    """
    baseline = promotion.baseline
    if baseline is None:
        return None
    if (
        promotion.status == Status.PRODUCTION_BAKE
        and promotion.baseline_window is None
        and not promotion.holdback
    ):
        return None
    return baseline.deployment


def _step_passed(t: _Transition, cause: str) -> None:
    promotion = t.promotion
    if promotion.status == Status.PRODUCTION_BAKE:
        _first_ring_done(t, cause)
    elif promotion.status == Status.RING and promotion.ring_index + 1 < len(promotion.rings):
        _enter_ring(t, promotion.ring_index + 1, f"{promotion.step}: {cause}")
    elif promotion.status == Status.RING:
        _complete(t, cause)
    elif promotion.step_index + 1 < len(promotion.canary_steps):
        _enter_canary_step(t, promotion.step_index + 1, f"{promotion.step}: {cause}")
    else:
        _go_to_production(t, f"{promotion.step}: {cause}; last canary step")


def _complete(t: _Transition, cause: str, by: str = SYSTEM) -> None:
    promotion = t.promotion
    baseline = promotion.baseline
    champion = ServingModel(
        version=promotion.candidate_version,
        deployment=promotion.candidate_deployment,
        since=t.state.champion.since if t.state.champion else t.now,
    )
    t.set_state(champion=champion, last_known_good=champion)
    if baseline is not None and baseline.deployment != promotion.candidate_deployment:
        t.emit(
            SetTraffic(traffic={promotion.candidate_deployment: 100}),
            DeleteDeployment(deployment=baseline.deployment),
        )
        t.tag(baseline.version, "archived")
    # The rings of this promotion (fixed at its start) serve the candidate now, each one's old
    # deployment gone; a ring removed from the policy before it started is no longer followed.
    rings = {e: own for e, own in t.state.rings.items() if e in promotion.rings}
    for endpoint in promotion.rings[: promotion.rings_moved]:
        old = rings.get(endpoint)
        if old is not None and old.deployment != promotion.candidate_deployment:
            t.emit(
                SetTraffic(traffic={promotion.candidate_deployment: 100}, endpoint=endpoint),
                DeleteDeployment(deployment=old.deployment, endpoint=endpoint),
            )
        rings[endpoint] = ServingModel(
            version=promotion.candidate_version,
            deployment=promotion.candidate_deployment,
            since=t.now,
        )
    t.set_state(rings=rings)
    t.event("promotion.completed", previous_version=baseline.version if baseline else None)
    _finish(t, Status.COMPLETED, f"production bake: {cause}", by=by)


def _on_promote_now(t: _Transition, command: PromoteNow) -> Decision[PromotionState]:
    reason = _matching(t, command.promotion_id)
    promotion = t.state.active
    if reason is None and promotion is not None:
        if promotion.status != Status.CANARY and not is_first_model_bake(promotion):
            reason = (
                "only a canary or a first model's production bake can be promoted now, "
                f"not {promotion.status}"
            )
        elif promotion.paused:
            reason = "promotion is paused: resume it first"
    if reason is not None:
        return t.ignore(command, reason)
    if is_first_model_bake(t.promotion):
        # Nothing older is kept for a rollback: ending the bake only makes it known-good.
        t.record(
            "promotion.promote_now",
            requested_by=command.requested_by,
            reason=command.reason,
            skipped=[BAKE],
        )
        _first_ring_done(t, f"promote_now: {command.reason}", by=command.requested_by)
        return t.done()
    skipped = [
        canary_step_name(i) for i in range(t.promotion.step_index, len(t.promotion.canary_steps))
    ]
    t.record(
        "promotion.promote_now",
        requested_by=command.requested_by,
        reason=command.reason,
        skipped=skipped,
    )
    _go_to_production(t, f"promote_now: {command.reason}", by=command.requested_by)
    return t.done()


# --- rollback and finishing --------------------------------------------------------------------


def _on_rollback(t: _Transition, command: RollbackRequested) -> Decision[PromotionState]:
    reason = _matching(t, command.promotion_id)
    if reason is not None:
        return t.ignore(command, reason)
    _rollback(t, f"requested by {command.requested_by}: {command.reason}", command.requested_by)
    return t.done()


def _on_deployment_failed(t: _Transition, command: DeploymentFailed) -> Decision[PromotionState]:
    reason = _matching(t, command.promotion_id)
    promotion = t.state.active
    if reason is None and promotion is not None:
        if promotion.status not in DEPLOYED:
            reason = f"no deployment in {promotion.status}"
        elif command.deployment != promotion.candidate_deployment:
            reason = f"{command.deployment} is not the candidate's deployment"
        elif command.endpoint is not None and command.endpoint not in _rings_deployed(promotion):
            reason = f"no deployment of the candidate on {command.endpoint}"
    if reason is not None:
        return t.ignore(command, reason)
    _rollback(
        t,
        f"deployment {command.deployment} failed: {command.error}",
        SYSTEM,
        terminal=Status.FAILED,
    )
    return t.done()


def _rollback(
    t: _Transition,
    reason: str,
    by: str,
    *,
    terminal: Literal[Status.ROLLED_BACK, Status.FAILED] = Status.ROLLED_BACK,
    start_next: bool = True,
) -> None:
    """All traffic back on the last known-good deployment FIRST, then remove the candidate."""
    promotion = t.promotion
    deployed = promotion.status in DEPLOYED
    had_traffic = promotion.status in (
        Status.CANARY,
        Status.PROMOTING,
        Status.PRODUCTION_BAKE,
        Status.RING,
    )
    known_good = t.state.last_known_good
    serving: str | None = known_good.version if known_good else None
    # Where traffic returns to (None: no known-good version, nothing serves afterwards). In the
    # production bake this differs from the champion, which is the candidate until now.
    target = (
        {"version": known_good.version, "deployment": known_good.deployment} if known_good else None
    )
    t.move(Status.ROLLING_BACK, promotion.step, reason, by, rollback_target=target)
    # The later rings that moved first, the last one first, each to its own known-good.
    for endpoint in reversed(_rings_deployed(promotion)):
        own = t.state.rings.get(endpoint)
        if own is not None:
            t.emit(
                DeployModel(
                    model_version=own.version, deployment=own.deployment, endpoint=endpoint
                ),
                SetTraffic(
                    traffic={own.deployment: 100, promotion.candidate_deployment: 0},
                    restore=True,
                    endpoint=endpoint,
                ),
            )
        t.emit(DeleteDeployment(deployment=promotion.candidate_deployment, endpoint=endpoint))
    if deployed and _had_shadow(promotion):
        # A mirrored deployment cannot be deleted: the mirror goes first (production's
        # traffic is untouched by it).
        t.emit(SetMirror(mirror={}))
    if deployed:
        if known_good is not None:
            traffic = {known_good.deployment: 100}
            if had_traffic:
                traffic[promotion.candidate_deployment] = 0
            # Idempotent (a no-op while it exists); deployed again if it was removed behind
            # the app's back, which the traffic below would otherwise wait for in vain.
            t.emit(
                DeployModel(model_version=known_good.version, deployment=known_good.deployment),
                SetTraffic(traffic=traffic, restore=True),
            )
        t.emit(DeleteDeployment(deployment=promotion.candidate_deployment))
    # The champion is whatever takes traffic now: the known-good one, or nothing at all.
    t.set_state(champion=known_good)
    if promotion.status in (Status.PRODUCTION_BAKE, Status.RING) and known_good is not None:
        t.tag(known_good.version, "production")
    stage = "failed" if terminal == Status.FAILED else "rolled_back"
    nothing_serves = had_traffic and known_good is None
    t.event(
        f"promotion.{stage}", reason=reason, serving_version=serving, nothing_serves=nothing_serves
    )
    _finish(
        t,
        terminal,
        reason,
        tag=stage,
        by=by,
        start_next=start_next,
        rollback_target=target,
        nothing_serves=nothing_serves,
    )


def _finish(
    t: _Transition,
    status: Status,
    reason: str,
    *,
    tag: str | None = None,
    by: str = SYSTEM,
    start_next: bool = True,
    **detail: Any,
) -> None:
    promotion = t.promotion
    if tag is not None:
        t.tag(promotion.candidate_version, tag)
    if status == Status.REJECTED:
        t.event("promotion.rejected", reason=reason)
    t.move(status, promotion.step, reason, by, **detail)
    entry = HistoryEntry(
        promotion_id=promotion.id,
        candidate_version=promotion.candidate_version,
        outcome=status,
        reason=reason,
        started_at=promotion.started_at,
        finished_at=t.now,
    )
    t.set_state(active=None, history=(*t.state.history, entry)[-HISTORY_LIMIT:])
    if start_next:
        _start_next_queued(t)


# --- pause and resume --------------------------------------------------------------------------


def _on_pause(t: _Transition, command: PausePromotion) -> Decision[PromotionState]:
    reason = _matching(t, command.promotion_id)
    if reason is None and t.promotion.paused:
        reason = "already paused"
    if reason is not None:
        return t.ignore(command, reason)
    t.update(
        paused=True, paused_by=command.requested_by, pause_reason=command.reason, paused_at=t.now
    )
    t.record("promotion.paused", requested_by=command.requested_by, reason=command.reason)
    return t.done()


def _on_resume(t: _Transition, command: ResumePromotion) -> Decision[PromotionState]:
    reason = _matching(t, command.promotion_id)
    if reason is None and not t.promotion.paused:
        reason = "not paused"
    if reason is not None:
        return t.ignore(command, reason)
    promotion = t.promotion
    if promotion.paused_by == ON_EXHAUSTED and promotion.status == Status.PRODUCTION_BAKE:
        # The bake has ended (its end stays): the extensions start again.
        t.update(inconclusive=0)
    elif promotion.paused_by == ON_EXHAUSTED:
        # Undecided gates: the person resuming gives the step time again.
        t.update(step_deadline=t.now + t.policy.canary.max_step_duration, inconclusive=0)
    elif promotion.step_deadline is not None and promotion.paused_at is not None:
        # Paused by a person or for drift: the step's clock stopped meanwhile.
        lost = max(t.now - promotion.paused_at, timedelta(0))
        t.update(step_deadline=promotion.step_deadline + lost)
    t.update(paused=False, paused_by=None, pause_reason="", paused_at=None)
    t.record("promotion.resumed", requested_by=command.requested_by, reason=command.reason)
    promotion = t.promotion
    ring = t.state.drift.endpoint if t.state.drift is not None else None
    expected = _expected_on(t.state, ring)
    # On the rings, only the ring whose deployment is being created waits for it (its traffic
    # moves once it is ready); every other endpoint (the first ring's included) can be put
    # back now. `deployment_ready` is the ring's being deployed, not theirs.
    settled = promotion.deployment_ready or (
        promotion.status == Status.RING and ring != _deploying_on(promotion)
    )
    if t.state.drift is not None and expected is not None and settled:
        # Paused for drift: the person resuming wants what the state says, put back. The drift
        # is cleared, so the same drift found again pauses again.
        t.emit(SetTraffic(traffic=dict(expected.traffic), endpoint=ring))
        if ring is None and (expected.mirror or _had_shadow(promotion)):
            t.emit(SetMirror(mirror=dict(expected.mirror)))
        t.set_state(drift=None, drift_repairs=0)
    # A new check id: whatever was scheduled before the pause is stale from here on.
    due = max(t.now, promotion.check_due_at or t.now)
    if promotion.status == Status.RING and promotion.rings_moved <= promotion.ring_index:
        # The ring's traffic has not moved yet: it moves once its deployment is ready.
        if promotion.deployment_ready:
            _move_ring_traffic(t, f"resumed by {command.requested_by}")
    elif promotion.status in CHECKED:
        t.update(check_attempt=promotion.check_attempt + 1)
        _schedule_check(t, promotion.step, due)
    elif promotion.status == Status.AWAITING_APPROVAL:
        t.update(check_attempt=promotion.check_attempt + 1)
        _schedule_timeout(t, due)
    elif promotion.status == Status.DEPLOYING and promotion.deployment_ready:
        _start_rollout(t, f"resumed by {command.requested_by}")
    return t.done()


# --- drift: the endpoint serves something else than the state says ------------------------------

RECONCILE = "reconcile"
# Repairs of one drift that keeps coming back before the pass stops and pages.
MAX_DRIFT_REPAIRS = 3


def _expected_on(state: PromotionState, endpoint: str | None) -> ExpectedEndpoint | None:
    """What the model's endpoint (None) or a later ring's must serve now."""
    return expected_ring(state, endpoint) if endpoint else expected_endpoint(state)


def _on_drift(t: _Transition, command: EndpointDrift) -> Decision[PromotionState]:
    """Audit and publish the drift, then repair it or pause the promotion (`on_drift`). The
    same drift found again is not reported again; a repair is sent again while it lasts."""
    ring = command.endpoint
    expected = _expected_on(t.state, ring)
    if (
        expected is None
        or expected.traffic != command.expected_traffic
        or expected.mirror != command.expected_mirror
    ):
        return Decision(state=t.original, ignored="the state has moved on since the read")
    active = t.state.active
    mode = t.policy.on_drift or ("pause" if active is not None else "repair")
    drift = Drift.model_validate(command.model_dump())
    known = t.state.drift == drift
    if known and (mode == "pause" or (active is not None and active.paused)):
        return Decision(state=t.original, ignored="drift already reported")
    detail: dict[str, Any] = {**drift.model_dump(mode="json"), "on_drift": mode}
    if not known:
        t.set_state(drift=drift)
        t.record("endpoint.drift", summary=drift.summary, **detail)
        t.emit(
            PublishEvent(
                event_type="endpoint.drift",
                data={"model": t.policy.model, "promotion_id": active.id if active else None}
                | detail,
            )
        )
    if mode == "repair" and known and t.state.drift_repairs >= MAX_DRIFT_REPAIRS:
        if t.state.drift_repairs == MAX_DRIFT_REPAIRS:
            # It keeps coming back (a deployment that crash-loops, someone fighting the app):
            # stop re-provisioning, page once, leave it to a person.
            t.set_state(drift_repairs=MAX_DRIFT_REPAIRS + 1)
            t.record("endpoint.repair_given_up", repairs=MAX_DRIFT_REPAIRS, **detail)
            t.emit(
                PublishEvent(
                    event_type="endpoint.repair_given_up",
                    data={"model": t.policy.model, "repairs": MAX_DRIFT_REPAIRS} | detail,
                )
            )
            return t.done()
        else:
            return Decision(state=t.original, ignored="repair given up: a person decides")
    if mode == "repair":
        t.set_state(drift_repairs=1 if not known else t.state.drift_repairs + 1)
        broken = (*drift.missing, *drift.unhealthy)
        for name in broken:  # traffic follows on a later pass, once they are ready
            t.emit(
                DeployModel(
                    model_version=expected.deployments[name], deployment=name, endpoint=ring
                )
            )
        if not broken:
            t.emit(SetTraffic(traffic=dict(expected.traffic), endpoint=ring))
            if ring is None and drift.actual_mirror != drift.expected_mirror:
                t.emit(SetMirror(mirror=dict(expected.mirror)))
        t.record("endpoint.repair", redeploy=list(broken), traffic=expected.traffic)
    elif active is not None and not active.paused:
        reason = f"endpoint drift: {drift.summary}"
        t.update(paused=True, paused_by=RECONCILE, pause_reason=reason, paused_at=t.now)
        t.record("promotion.paused", requested_by=RECONCILE, reason=reason)
    return t.done()


def _on_in_sync(t: _Transition, command: EndpointInSync) -> Decision[PromotionState]:
    if t.state.drift is None:
        return Decision(state=t.original, ignored="no drift to clear")
    if t.state.drift.endpoint != command.endpoint:
        return Decision(
            state=t.original,
            ignored=f"the drift is on {t.state.drift.endpoint or 'the model endpoint'}, "
            f"not on {command.endpoint or 'the model endpoint'}",
        )
    t.record("endpoint.drift_resolved", **t.state.drift.model_dump(mode="json"))
    t.set_state(drift=None, drift_repairs=0)
    t.emit(PublishEvent(event_type="endpoint.drift_resolved", data={"model": t.policy.model}))
    return t.done()


_HANDLERS: dict[type, Callable[[_Transition, Any], Decision[PromotionState]]] = {
    StartPromotion: _on_start,
    GateCheck: _on_gate_check,
    ApprovalDecision: _on_approval,
    ApprovalTimedOut: _on_approval_timeout,
    DeploymentReady: _on_deployment_ready,
    DeploymentFailed: _on_deployment_failed,
    RollbackRequested: _on_rollback,
    PromoteNow: _on_promote_now,
    PausePromotion: _on_pause,
    ResumePromotion: _on_resume,
    EndpointDrift: _on_drift,
    EndpointInSync: _on_in_sync,
}
