"""Every transition of the promotion machine, as a table: given a status, when a command,
then the resulting status and the exact effects, in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from domain.decision import AuditEntry, Decision
from domain.effects import DeleteDeployment, DeployModel, SendMessage, SetTraffic, TagModelVersion
from promotion.commands import (
    ApprovalDecision,
    ApprovalTimedOut,
    DeploymentFailed,
    DeploymentReady,
    GateCheck,
    PausePromotion,
    PromoteNow,
    PromotionCommand,
    ResumePromotion,
    RollbackRequested,
    StartPromotion,
)
from promotion.state import PromotionState, PromotionStatus

from .support import APPROVER, Harness, dep, make_policy, offline, serving, with_champion

S = PromotionStatus

# --- givens: harnesses driven to a status through the machine itself ------------------------


def fresh(**policy: object) -> Harness:
    return Harness(make_policy(**policy), with_champion())


def first_model(**policy: object) -> Harness:
    return Harness(make_policy(**policy), PromotionState())


def staging_gate(**policy: object) -> Harness:
    h = fresh(**policy)
    h.start(quality="none")
    assert h.status == S.STAGING_GATE
    return h


def first_model_staging_gate() -> Harness:
    h = first_model()
    h.start(quality="none")
    assert h.status == S.STAGING_GATE
    return h


def awaiting_approval(on_timeout: str = "reject", **policy: object) -> Harness:
    h = fresh(
        approval={"required": True, "approvers": [APPROVER], "on_timeout": on_timeout}, **policy
    )
    h.start()
    assert h.status == S.AWAITING_APPROVAL
    return h


def deploying(h: Harness | None = None) -> Harness:
    h = h or fresh()
    h.start()
    assert h.status == S.DEPLOYING
    return h


def ready(h: Harness) -> DeploymentReady:
    return DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment)


def canary(**policy: object) -> Harness:
    h = deploying(fresh(**policy))
    h.send(ready(h))
    assert h.status == S.CANARY
    return h


def last_canary_step(**policy: object) -> Harness:
    h = canary(**policy)
    h.send(h.check("pass"))
    assert h.active.step == "canary-2"
    return h


def production_bake(**policy: object) -> Harness:
    h = last_canary_step(**policy)
    h.send(h.check("pass"))
    assert h.status == S.PRODUCTION_BAKE
    return h


def first_model_bake() -> Harness:
    h = deploying(first_model())
    h.send(ready(h))
    assert h.status == S.PRODUCTION_BAKE
    return h


def paused(given: Callable[[], Harness]) -> Callable[[], Harness]:
    def build() -> Harness:
        h = given()
        h.send(PausePromotion(promotion_id=h.active.id, requested_by="ops", reason="incident"))
        assert h.active.paused
        return h

    return build


# --- commands ----------------------------------------------------------------------------------


def approve(
    h: Harness, approver: str = APPROVER, version: str | None = None, decision: str = "approve"
) -> ApprovalDecision:
    return ApprovalDecision(
        promotion_id=h.active.id,
        step="approval",
        candidate_version=version or h.active.candidate_version,
        decision=decision,
        approver=approver,
    )  # type: ignore[arg-type]


def rollback(h: Harness) -> RollbackRequested:
    return RollbackRequested(promotion_id=h.active.id, reason="bad feeling", requested_by="bob")


def promote_now(h: Harness) -> PromoteNow:
    return PromoteNow(promotion_id=h.active.id, reason="urgent fix", requested_by="carol")


def resume(h: Harness) -> ResumePromotion:
    return ResumePromotion(promotion_id=h.active.id, requested_by="ops")


def timeout(h: Harness, attempt: int | None = None) -> ApprovalTimedOut:
    """The approval timeout as the machine scheduled it (attempt None: the pending one)."""
    timeout_id = (
        h.active.pending_check_id
        if attempt is None
        else f"{h.active.id}:approval:timeout:{attempt}"
    )
    return ApprovalTimedOut(promotion_id=h.active.id, step="approval", timeout_id=timeout_id)


def resumed(given: Callable[[], Harness]) -> Callable[[], Harness]:
    def build() -> Harness:
        h = given()
        h.send(resume(h))
        assert not h.active.paused
        return h

    return build


def stale_check(h: Harness) -> GateCheck:
    return GateCheck(
        promotion_id=h.active.id,
        step=h.active.step,
        check_id="old:check:0",
        offline=offline("pass"),
    )


def pause(h: Harness) -> PausePromotion:
    return PausePromotion(promotion_id=h.active.id, requested_by="ops")


def failed(h: Harness) -> DeploymentFailed:
    return DeploymentFailed(
        promotion_id=h.active.id, deployment=h.active.candidate_deployment, error="crash"
    )


def newer(h: Harness) -> StartPromotion:
    return StartPromotion(candidate_version="3", offline=offline("pass"))


MoveEffect = SetTraffic | DeleteDeployment
Then = Callable[[Harness, Decision[PromotionState], PromotionState], None]


@dataclass(frozen=True)
class Case:
    name: str
    given: Callable[[], Harness]
    when: Callable[[Harness], PromotionCommand]
    status: PromotionStatus
    effects: list[str] = field(default_factory=list)
    ignored: bool = False
    # The exact SetTraffic / DeleteDeployment effects, in order. Required when `effects` has any.
    moves: tuple[MoveEffect, ...] | None = None
    # Further assertions: on the harness after the command, its decision and the state before.
    then: Then | None = None


def traffic(**weights: int) -> SetTraffic:
    """`traffic(v1=100, v2=0)`: a SetTraffic keyed by the versions' deployment names."""
    return SetTraffic(traffic={dep(name[1:]): weight for name, weight in weights.items()})


def restore(**weights: int) -> SetTraffic:
    """A rollback's traffic back to the known-good version (never given up)."""
    return traffic(**weights).model_copy(update={"restore": True})


def delete(version: str) -> DeleteDeployment:
    return DeleteDeployment(deployment=dep(version))


def now_paused(h: Harness, decision: Decision[PromotionState], before: PromotionState) -> None:
    assert h.active.paused and h.active.paused_by == "ops"
    assert [entry.action for entry in decision.audit] == ["promotion.paused"]


def rescheduled(step: str, attempt: int) -> Then:
    """Resumed: one new check for `step` under a new id, due when the held one was (or now)."""

    def then(h: Harness, decision: Decision[PromotionState], before: PromotionState) -> None:
        assert before.active is not None and before.active.check_due_at is not None
        assert not h.active.paused
        (send,) = decision.effects
        assert isinstance(send, SendMessage) and send.message_type == "GateCheck"
        assert send.message_id == f"{h.active.id}:{step}:check:{attempt}"
        assert send.message_id == h.active.pending_check_id != before.active.pending_check_id
        assert send.not_before == max(h.now, before.active.check_due_at)

    return then


def refused(reason: str) -> Then:
    def then(h: Harness, decision: Decision[PromotionState], before: PromotionState) -> None:
        assert decision.ignored == reason
        assert decision.audit[0].detail["reason"] == reason

    return then


def assert_timeout_rescheduled(h: Harness, decision: Decision[PromotionState]) -> None:
    (send,) = decision.effects
    assert isinstance(send, SendMessage) and send.message_type == "ApprovalTimedOut"
    assert send.message_id == h.active.pending_check_id == f"{h.active.id}:approval:timeout:2"
    assert ApprovalTimedOut.model_validate(send.payload) == timeout(h)
    assert send.not_before == h.active.approval_expires_at


def assert_stale_timeout(h: Harness, decision: Decision[PromotionState]) -> None:
    pending = h.active.pending_check_id
    assert pending == f"{h.active.id}:approval:timeout:2"
    assert (
        decision.ignored == f"stale timeout {h.active.id}:approval:timeout:1 (expected {pending})"
    )


def superseded(h: Harness, decision: Decision[PromotionState], before: PromotionState) -> None:
    assert h.state.history[-1].outcome == S.ROLLED_BACK
    assert "superseded by v3" in h.state.history[-1].reason
    assert h.active.candidate_version == "3" and h.active.baseline == h.state.last_known_good


PUB, TAG, SEND, DEPLOY, TRAFFIC, DELETE, ASK = (
    "publish_event", "tag_model_version", "send_message", "deploy_model", "set_traffic",
    "delete_deployment", "request_approval",
)  # fmt: skip
ROLLBACK_LIVE = [DEPLOY, TRAFFIC, DELETE, PUB, TAG]  # known-good there, traffic, delete, record
ROLLBACK_BAKE = [
    DEPLOY,
    TRAFFIC,
    DELETE,
    TAG,
    PUB,
    TAG,
]  # ... and the known-good is tagged production
BACK_TO_V1 = (restore(v1=100, v2=0), delete("2"))  # all traffic on v1 first, then delete v2


def canary_policy(**changes: object) -> dict:
    return {**make_policy().canary.model_dump(), **changes}


def paused_by_policy(h: Harness) -> None:
    assert h.active.paused and h.active.paused_by == "policy:on_exhausted"
    assert h.active.step == "canary-1" and h.active.traffic_weight == 10


CASES = [
    # starting and the staging gate
    Case(
        "start passes staging -> deploying",
        fresh,
        lambda h: StartPromotion(candidate_version="2", offline=offline("pass")),
        S.DEPLOYING,
        [PUB, TAG, DEPLOY],
    ),
    Case(
        "start needs approval -> awaiting_approval",
        lambda: fresh(approval={"required": True, "approvers": [APPROVER]}),
        lambda h: StartPromotion(candidate_version="2", offline=offline("pass")),
        S.AWAITING_APPROVAL,
        [PUB, TAG, ASK, SEND],
    ),
    Case(
        "start without metrics -> staging_gate retry",
        fresh,
        lambda h: StartPromotion(candidate_version="2"),
        S.STAGING_GATE,
        [PUB, SEND],
    ),
    Case(
        "start fails threshold -> rejected",
        fresh,
        lambda h: StartPromotion(candidate_version="2", offline=offline("fail")),
        S.REJECTED,
        [PUB, TAG, PUB],
    ),
    Case(
        "start worse than champion -> rejected",
        fresh,
        lambda h: StartPromotion(
            candidate_version="2",
            offline=offline("pass").model_copy(update={"champion": {"auc": 0.95}}),
        ),
        S.REJECTED,
        [PUB, TAG, PUB],
    ),
    Case(
        "start with champion metrics missing -> staging_gate",
        fresh,
        lambda h: StartPromotion(candidate_version="2", offline=offline("pass", champion=False)),
        S.STAGING_GATE,
        [PUB, SEND],
    ),
    Case(
        "first model: no champion gate passes -> deploying",
        first_model,
        lambda h: StartPromotion(candidate_version="1", offline=offline("pass", champion=False)),
        S.DEPLOYING,
        [PUB, TAG, DEPLOY],
    ),
    Case(
        "start the champion's version -> ignored",
        fresh,
        lambda h: StartPromotion(candidate_version="1"),
        S.REJECTED,
        ignored=True,
    ),
    Case(
        "staging check passes -> deploying",
        staging_gate,
        lambda h: h.check("pass"),
        S.DEPLOYING,
        [TAG, DEPLOY],
    ),
    Case(
        "staging check fails -> rejected",
        staging_gate,
        lambda h: h.check("fail"),
        S.REJECTED,
        [TAG, PUB],
    ),
    Case(
        "staging inconclusive, attempts exhausted -> rejected",
        staging_gate,
        lambda h: h.check("none"),
        S.REJECTED,
        [TAG, PUB],
    ),
    Case(
        "staging inconclusive, attempts left -> retry",
        lambda: staging_gate(staging={**make_policy().staging.model_dump(), "max_attempts": 3}),
        lambda h: h.check("none"),
        S.STAGING_GATE,
        [SEND],
    ),
    Case("staging stale check -> ignored", staging_gate, stale_check, S.STAGING_GATE, ignored=True),
    Case(
        "staging rollback -> rolled_back (nothing deployed)",
        staging_gate,
        rollback,
        S.ROLLED_BACK,
        [PUB, TAG],
    ),
    Case("staging pause -> paused", staging_gate, pause, S.STAGING_GATE, [], then=now_paused),
    Case(
        "paused staging check -> held",
        paused(staging_gate),
        lambda h: h.check("pass"),
        S.STAGING_GATE,
        ignored=True,
        then=refused("promotion is paused: check held, resume reschedules it"),
    ),
    Case(
        "paused staging resume -> check rescheduled",
        paused(staging_gate),
        resume,
        S.STAGING_GATE,
        [SEND],
        then=rescheduled("staging", 2),
    ),
    Case(
        "paused staging rollback -> rolled_back (nothing deployed)",
        paused(staging_gate),
        rollback,
        S.ROLLED_BACK,
        [PUB, TAG],
        moves=(),
    ),
    # approval
    Case("approved -> deploying", awaiting_approval, approve, S.DEPLOYING, [DEPLOY]),
    Case(
        "approval rejected -> rejected",
        awaiting_approval,
        lambda h: approve(h, decision="reject"),
        S.REJECTED,
        [TAG, PUB],
    ),
    Case(
        "unknown approver -> refused",
        awaiting_approval,
        lambda h: approve(h, approver="mallory"),
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "approval names another version -> refused",
        awaiting_approval,
        lambda h: approve(h, version="99"),
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "approval names another promotion -> refused",
        awaiting_approval,
        lambda h: approve(h).model_copy(update={"promotion_id": "other"}),
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "approval names another step -> refused",
        awaiting_approval,
        lambda h: approve(h).model_copy(update={"step": "canary-1"}),
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "approval timeout, policy reject -> rejected",
        awaiting_approval,
        timeout,
        S.REJECTED,
        [TAG, PUB],
    ),
    Case(
        "approval timeout, policy approve -> deploying",
        lambda: awaiting_approval("approve"),
        timeout,
        S.DEPLOYING,
        [DEPLOY],
    ),
    Case(
        "approval timeout naming no timeout id (not the machine's) -> ignored",
        awaiting_approval,
        lambda h: ApprovalTimedOut(promotion_id=h.active.id, step="approval"),
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "approval timeout under a guessed id -> ignored",
        awaiting_approval,
        lambda h: timeout(h).model_copy(update={"timeout_id": f"{h.active.id}:approval:timeout:9"}),
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "awaiting approval rollback -> rolled_back",
        awaiting_approval,
        rollback,
        S.ROLLED_BACK,
        [PUB, TAG],
    ),
    Case(
        "paused awaiting approval rollback -> rolled_back",
        paused(awaiting_approval),
        rollback,
        S.ROLLED_BACK,
        [PUB, TAG],
        moves=(),
    ),
    Case(
        "awaiting approval, newer candidate, supersede -> the new one awaits approval",
        lambda: awaiting_approval(on_newer_candidate="supersede"),
        newer,
        S.AWAITING_APPROVAL,
        [PUB, TAG, PUB, TAG, ASK, SEND],
        moves=(),
        then=superseded,
    ),
    Case(
        "paused approval -> refused",
        paused(awaiting_approval),
        approve,
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "paused approval timeout -> held",
        paused(awaiting_approval),
        timeout,
        S.AWAITING_APPROVAL,
        ignored=True,
    ),
    Case(
        "resume awaiting approval -> timeout rescheduled",
        paused(awaiting_approval),
        resume,
        S.AWAITING_APPROVAL,
        [SEND],
        then=lambda h, decision, before: assert_timeout_rescheduled(h, decision),
    ),
    Case(
        "scheduled approval timeout -> rejected",
        awaiting_approval,
        timeout,
        S.REJECTED,
        [TAG, PUB],
    ),
    Case(
        "pre-pause approval timeout after resume -> stale",
        resumed(paused(awaiting_approval)),
        lambda h: timeout(h, attempt=1),
        S.AWAITING_APPROVAL,
        ignored=True,
        then=lambda h, decision, before: assert_stale_timeout(h, decision),
    ),
    Case(
        "rescheduled approval timeout after resume -> rejected",
        resumed(paused(awaiting_approval)),
        timeout,
        S.REJECTED,
        [TAG, PUB],
    ),
    # deployment
    Case(
        "deployment ready -> canary step 1",
        deploying,
        ready,
        S.CANARY,
        [TRAFFIC, SEND],
        moves=(traffic(v1=90, v2=10),),
    ),
    Case(
        "first model ready -> 100% and bake",
        lambda: deploying(first_model()),
        ready,
        S.PRODUCTION_BAKE,
        [TRAFFIC, TAG, PUB, SEND],
        moves=(traffic(v2=100),),
    ),
    Case(
        "no canary steps -> 100% and bake",
        lambda: deploying(fresh(canary={"steps": []})),
        ready,
        S.PRODUCTION_BAKE,
        [TRAFFIC, TAG, PUB, SEND],
        moves=(traffic(v2=100, v1=0),),
    ),
    Case(
        "ready for another deployment -> ignored",
        deploying,
        lambda h: DeploymentReady(promotion_id=h.active.id, deployment=dep("7")),
        S.DEPLOYING,
        ignored=True,
    ),
    Case(
        "deployment failed -> failed",
        deploying,
        lambda h: DeploymentFailed(
            promotion_id=h.active.id, deployment=h.active.candidate_deployment, error="quota"
        ),
        S.FAILED,
        [DEPLOY, TRAFFIC, DELETE, PUB, TAG],
        moves=(restore(v1=100), delete("2")),
    ),
    Case(
        "deploying rollback -> rolled_back",
        deploying,
        rollback,
        S.ROLLED_BACK,
        [DEPLOY, TRAFFIC, DELETE, PUB, TAG],
        moves=(restore(v1=100), delete("2")),
    ),
    Case("paused deploying, ready -> held", paused(deploying), ready, S.DEPLOYING, []),
    Case(
        "paused deploying rollback -> rolled_back",
        paused(deploying),
        rollback,
        S.ROLLED_BACK,
        [DEPLOY, TRAFFIC, DELETE, PUB, TAG],
        moves=(restore(v1=100), delete("2")),
    ),
    # canary
    Case(
        "canary pass -> next step",
        canary,
        lambda h: h.check("pass"),
        S.CANARY,
        [TRAFFIC, SEND],
        moves=(traffic(v1=50, v2=50),),
    ),
    Case(
        "last canary step pass -> production bake",
        last_canary_step,
        lambda h: h.check("pass"),
        S.PRODUCTION_BAKE,
        [TRAFFIC, TAG, PUB, SEND],
        moves=(traffic(v2=100, v1=0),),
    ),
    Case(
        "canary fail -> rolled_back",
        canary,
        lambda h: h.check("fail"),
        S.ROLLED_BACK,
        ROLLBACK_LIVE,
        moves=BACK_TO_V1,
    ),
    Case("canary samples short -> waits", canary, lambda h: h.check("few"), S.CANARY, [SEND]),
    Case("canary metrics missing -> waits", canary, lambda h: h.check("none"), S.CANARY, [SEND]),
    Case(
        "canary out of time, rollback -> rolled_back",
        lambda: canary(canary=canary_policy(max_step_duration="30m", on_exhausted="rollback")),
        lambda h: h.check("few"),
        S.ROLLED_BACK,
        ROLLBACK_LIVE,
        moves=BACK_TO_V1,
    ),
    Case(
        "canary out of time -> paused for a person (default on_exhausted)",
        lambda: canary(canary=canary_policy(max_step_duration="30m")),
        lambda h: h.check("few"),
        S.CANARY,
        [PUB],
        then=lambda h, d, before: paused_by_policy(h),
    ),
    Case(
        "canary out of time, promote, too few samples -> paused, never promoted",
        lambda: canary(canary=canary_policy(max_step_duration="30m", on_exhausted="promote")),
        lambda h: h.check("few"),
        S.CANARY,
        [PUB],
        then=lambda h, d, before: paused_by_policy(h),
    ),
    Case(
        "canary out of time, promote, metrics missing -> paused, never promoted",
        lambda: canary(canary=canary_policy(max_step_duration="30m", on_exhausted="promote")),
        lambda h: h.check("none"),
        S.CANARY,
        [PUB],
        then=lambda h, d, before: paused_by_policy(h),
    ),
    Case("canary stale check -> ignored", canary, stale_check, S.CANARY, ignored=True),
    Case(
        "promote now -> production bake",
        canary,
        promote_now,
        S.PRODUCTION_BAKE,
        [TRAFFIC, TAG, PUB, SEND],
        moves=(traffic(v2=100, v1=0),),
    ),
    Case(
        "canary rollback -> rolled_back",
        canary,
        rollback,
        S.ROLLED_BACK,
        ROLLBACK_LIVE,
        moves=BACK_TO_V1,
    ),
    Case(
        "canary deployment failed -> failed",
        canary,
        lambda h: DeploymentFailed(
            promotion_id=h.active.id, deployment=h.active.candidate_deployment, error="crash"
        ),
        S.FAILED,
        ROLLBACK_LIVE,
        moves=BACK_TO_V1,
    ),
    Case(
        "canary pause -> paused",
        canary,
        lambda h: PausePromotion(promotion_id=h.active.id, requested_by="ops"),
        S.CANARY,
        [],
    ),
    Case(
        "paused canary check -> held",
        paused(canary),
        lambda h: h.check("pass"),
        S.CANARY,
        ignored=True,
    ),
    Case(
        "paused canary promote now -> ignored", paused(canary), promote_now, S.CANARY, ignored=True
    ),
    Case(
        "paused canary rollback -> rolled_back",
        paused(canary),
        rollback,
        S.ROLLED_BACK,
        ROLLBACK_LIVE,
        moves=BACK_TO_V1,
    ),
    Case("paused canary resume -> check rescheduled", paused(canary), resume, S.CANARY, [SEND]),
    Case(
        "pause twice -> ignored",
        paused(canary),
        lambda h: PausePromotion(promotion_id=h.active.id, requested_by="ops"),
        S.CANARY,
        ignored=True,
    ),
    Case("resume when running -> ignored", canary, resume, S.CANARY, ignored=True),
    Case(
        "approval in canary -> refused (stale)",
        canary,
        approve,
        S.CANARY,
        ignored=True,
        then=refused("no approval expected in canary"),
    ),
    # production bake
    Case(
        "bake pass -> completed, old deployment removed",
        production_bake,
        lambda h: h.check("pass"),
        S.COMPLETED,
        [TRAFFIC, DELETE, TAG, PUB],
        moves=(traffic(v2=100), delete("1")),
    ),
    Case(
        "bake fail -> rolled_back to the old champion",
        production_bake,
        lambda h: h.check("fail"),
        S.ROLLED_BACK,
        ROLLBACK_BAKE,
        moves=BACK_TO_V1,
    ),
    Case(
        "bake inconclusive -> extended",
        production_bake,
        lambda h: h.check("few"),
        S.PRODUCTION_BAKE,
        [SEND],
    ),
    Case(
        "bake rollback -> rolled_back",
        production_bake,
        rollback,
        S.ROLLED_BACK,
        ROLLBACK_BAKE,
        moves=BACK_TO_V1,
    ),
    Case(
        "paused bake rollback -> rolled_back",
        paused(production_bake),
        rollback,
        S.ROLLED_BACK,
        ROLLBACK_BAKE,
        moves=BACK_TO_V1,
    ),
    Case(
        "bake promote now -> ignored", production_bake, promote_now, S.PRODUCTION_BAKE, ignored=True
    ),
    Case(
        "bake deployment failed -> failed, back on the old champion",
        production_bake,
        failed,
        S.FAILED,
        ROLLBACK_BAKE,
        moves=BACK_TO_V1,
    ),
    Case("bake pause -> paused", production_bake, pause, S.PRODUCTION_BAKE, [], then=now_paused),
    Case(
        "paused bake check -> held",
        paused(production_bake),
        lambda h: h.check("fail"),
        S.PRODUCTION_BAKE,
        ignored=True,
        then=refused("promotion is paused: check held, resume reschedules it"),
    ),
    Case(
        "paused bake resume -> check rescheduled",
        paused(production_bake),
        resume,
        S.PRODUCTION_BAKE,
        [SEND],
        then=rescheduled("bake", 2),
    ),
    Case(
        "bake, newer candidate, supersede -> rolled back, the new one deploying",
        lambda: production_bake(on_newer_candidate="supersede"),
        newer,
        S.DEPLOYING,
        [*ROLLBACK_BAKE, PUB, TAG, DEPLOY],
        moves=BACK_TO_V1,
        then=superseded,
    ),
    Case(
        "first model bake pass -> completed",
        first_model_bake,
        lambda h: h.check("pass"),
        S.COMPLETED,
        [PUB],
    ),
    Case(
        "first model bake rollback -> nothing serves",
        first_model_bake,
        rollback,
        S.ROLLED_BACK,
        [DELETE, PUB, TAG],
        moves=(delete("2"),),
    ),
    Case(
        "first model bake deployment failed -> failed, nothing serves",
        first_model_bake,
        failed,
        S.FAILED,
        [DELETE, PUB, TAG],
        moves=(delete("2"),),
    ),
    # commands with nothing to act on
    Case(
        "rollback with nothing active -> ignored",
        fresh,
        lambda h: RollbackRequested(reason="x", requested_by="bob"),
        S.ROLLED_BACK,
        ignored=True,
    ),
    Case(
        "rollback of another promotion -> ignored",
        canary,
        lambda h: RollbackRequested(promotion_id="other", reason="x", requested_by="bob"),
        S.CANARY,
        ignored=True,
    ),
    Case(
        "newer candidate, queue -> queued",
        canary,
        lambda h: StartPromotion(candidate_version="3"),
        S.CANARY,
        [],
    ),
    Case(
        "same candidate again -> ignored",
        canary,
        lambda h: StartPromotion(candidate_version="2"),
        S.CANARY,
        ignored=True,
    ),
]


def _rollback_entries(decision: Decision[PromotionState]) -> list[AuditEntry]:
    """The rolling_back entry and the rolled_back / failed one that follows it."""
    return [
        entry
        for entry in decision.audit
        if entry.to_state == S.ROLLING_BACK or entry.from_state == S.ROLLING_BACK
    ]


def _assert_rollback_target(decision: Decision[PromotionState], before: PromotionState) -> None:
    """Any rollback records where traffic returns: the known-good model, or None."""
    entries = _rollback_entries(decision)
    if not entries:
        return
    assert [entry.to_state for entry in entries[:1]] == [S.ROLLING_BACK] and len(entries) == 2
    known_good = before.last_known_good
    target = (
        {"version": known_good.version, "deployment": known_good.deployment} if known_good else None
    )
    for entry in entries:
        assert entry.detail["rollback_target"] == target


def _status(h: Harness) -> PromotionStatus | None:
    if h.state.active is None and not h.state.history:
        return None
    return h.status


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_transition(case: Case) -> None:
    h = case.given()
    before = h.state
    command = case.when(h)
    decision = h.send(command)

    if case.ignored:
        assert decision.ignored, "expected the command to be ignored"
        assert decision.state == before and not decision.effects
        assert len(decision.audit) == 1
        expected = (
            "approval.refused" if isinstance(command, ApprovalDecision) else "command.ignored"
        )
        assert decision.audit[0].action == expected
        assert _status(h) in (case.status, None)
        if case.then is not None:
            case.then(h, decision, before)
        return
    assert decision.ignored is None
    assert h.status == case.status
    assert [effect.kind for effect in decision.effects] == case.effects
    if {TRAFFIC, DELETE} & set(case.effects):
        assert case.moves is not None, "a row that moves traffic or deletes must say how"
    if case.moves is not None:
        moved = [e for e in decision.effects if isinstance(e, SetTraffic | DeleteDeployment)]
        assert moved == list(case.moves)
    _assert_rollback_target(decision, before)
    if case.then is not None:
        case.then(h, decision, before)
    # Applying the same command again changes nothing (content-based idempotence).
    again = h.send(command)
    assert again.ignored and again.state == decision.state and not again.effects


def test_canary_traffic_moves_in_steps_then_to_100() -> None:
    h = canary()
    old, new = dep("1"), dep("2")
    ready_traffic = [e for e in h.last.effects if isinstance(e, SetTraffic)]  # type: ignore[union-attr]
    assert ready_traffic[-1].traffic == {old: 90, new: 10}
    h.send(h.check("pass"))
    assert [e.traffic for e in h.last.effects if isinstance(e, SetTraffic)] == [{old: 50, new: 50}]
    h.send(h.check("pass"))
    assert [e.traffic for e in h.last.effects if isinstance(e, SetTraffic)] == [{old: 0, new: 100}]
    # In production, but not yet known-good: the old deployment is kept for the bake.
    assert h.state.champion.version == "2"  # type: ignore[union-attr]
    assert h.state.last_known_good.version == "1"  # type: ignore[union-attr]
    h.send(h.check("pass"))
    effects = h.last.effects  # type: ignore[union-attr]
    assert effects[0] == SetTraffic(traffic={new: 100})
    assert effects[1] == DeleteDeployment(deployment=old)
    assert h.state.last_known_good.version == "2"  # type: ignore[union-attr]
    assert h.state.active is None and h.state.history[-1].outcome == S.COMPLETED


@pytest.mark.parametrize("given", [canary, production_bake, paused(canary)])
def test_rollback_puts_all_traffic_on_known_good_before_deleting(given) -> None:
    h = given()
    h.send(rollback(h))
    effects = h.last.effects  # type: ignore[union-attr]
    traffic = next(i for i, e in enumerate(effects) if isinstance(e, SetTraffic))
    delete = next(i for i, e in enumerate(effects) if isinstance(e, DeleteDeployment))
    assert traffic < delete
    assert effects[traffic].traffic == {dep("1"): 100, dep("2"): 0}  # type: ignore[union-attr]
    assert effects[delete].deployment == dep("2")  # type: ignore[union-attr]
    assert h.state.champion == h.state.last_known_good and h.state.champion.version == "1"  # type: ignore[union-attr]
    tags = [e for e in effects if isinstance(e, TagModelVersion) and e.model_version == "2"]
    assert tags[-1].tags["retrain.stage"] == "rolled_back"


@pytest.mark.parametrize(
    "when",
    [rollback, lambda h: h.check("fail"), failed, newer],
    ids=["rollback", "gate failed", "deployment failed", "superseded"],
)
def test_rollback_from_the_bake_records_the_known_good_target_not_the_champion(when) -> None:
    h = production_bake(on_newer_candidate="supersede")
    # In the bake the candidate is already the champion; the rollback target is the old model.
    assert h.state.champion is not None and h.state.champion.version == "2"
    assert h.state.last_known_good is not None and h.state.last_known_good.version == "1"
    decision = h.send(when(h))
    rolling, finished = _rollback_entries(decision)
    assert rolling.action == "promotion.rolling_back" and rolling.from_state == S.PRODUCTION_BAKE
    assert finished.action in ("promotion.rolled_back", "promotion.failed")
    for entry in (rolling, finished):
        assert entry.detail["rollback_target"] == {"version": "1", "deployment": dep("1")}
    assert finished.detail["nothing_serves"] is False
    assert h.state.champion == h.state.last_known_good == serving("1")


@pytest.mark.parametrize(
    ("given", "nothing_serves"), [(first_model_bake, True), (first_model_staging_gate, False)]
)
def test_rollback_without_known_good_records_no_target(given, nothing_serves) -> None:
    h = given()
    rolling, finished = _rollback_entries(h.send(rollback(h)))
    assert rolling.detail["rollback_target"] is None
    assert finished.detail["rollback_target"] is None
    # Only a first model that took traffic leaves nothing serving; before that nothing did.
    assert finished.detail["nothing_serves"] is nothing_serves


def test_first_model_rollback_records_that_nothing_serves() -> None:
    h = first_model_bake()
    h.send(rollback(h))
    assert h.state.champion is None and h.state.last_known_good is None
    assert h.last.audit[-1].detail["nothing_serves"] is True  # type: ignore[union-attr]


def test_scheduled_checks_have_deterministic_ids() -> None:
    h = canary()
    send = next(e for e in h.last.effects if isinstance(e, SendMessage))  # type: ignore[union-attr]
    assert send.message_id == f"{h.active.id}:canary-1:check:1"
    assert send.message_type == "GateCheck"
    assert send.not_before == h.now + timedelta(minutes=30)
    assert GateCheck.model_validate(send.payload).check_id == send.message_id
    h.send(h.check("few"))
    send = next(e for e in h.last.effects if isinstance(e, SendMessage))  # type: ignore[union-attr]
    assert send.message_id == f"{h.active.id}:canary-1:check:2"


def test_pause_holds_checks_and_resume_reschedules_with_a_new_id() -> None:
    h = canary()
    scheduled = h.check("pass")
    h.send(PausePromotion(promotion_id=h.active.id, requested_by="ops", reason="incident"))
    assert h.send(scheduled).ignored
    h.send(resume(h))
    new_id = h.active.pending_check_id
    assert new_id != scheduled.check_id
    assert h.send(scheduled).ignored  # the pre-pause check is stale now
    h.send(h.check("pass"))
    assert h.active.step == "canary-2"


def test_ready_while_paused_starts_the_canary_on_resume() -> None:
    h = paused(deploying)()
    h.send(ready(h))
    assert h.status == S.DEPLOYING and h.active.deployment_ready
    h.send(resume(h))
    assert h.status == S.CANARY


def test_promote_now_records_who_and_why() -> None:
    h = canary()
    h.send(promote_now(h))
    step = next(s for s in h.active.steps if s.status == S.PROMOTING)
    assert step.caused_by == "carol" and "urgent fix" in step.cause
    audit = next(a for a in h.last.audit if a.action == "promotion.promote_now")  # type: ignore[union-attr]
    assert audit.detail["skipped"] == ["canary-1", "canary-2"]


def test_queued_candidate_starts_when_the_active_one_finishes() -> None:
    h = production_bake()
    h.send(StartPromotion(candidate_version="3"))
    assert [q.version for q in h.state.queued] == ["3"]
    h.send(h.check("pass"))
    assert h.state.history[-1].outcome == S.COMPLETED
    assert h.active.candidate_version == "3" and h.status == S.STAGING_GATE
    assert h.active.baseline.version == "2"  # type: ignore[union-attr]
    send = [e for e in h.last.effects if isinstance(e, SendMessage)]  # type: ignore[union-attr]
    assert send[-1].message_id == f"{h.active.id}:staging:check:1"
    h.send(h.check("pass"))
    assert h.status == S.DEPLOYING


def test_supersede_rolls_back_cleanly_then_starts_the_new_one() -> None:
    h = canary(on_newer_candidate="supersede")
    old_id = h.active.id
    h.send(StartPromotion(candidate_version="3", offline=offline("pass")))
    effects = h.last.effects  # type: ignore[union-attr]
    assert effects[0] == DeployModel(model_version="1", deployment=dep("1"))  # a no-op if there
    assert effects[1] == SetTraffic(traffic={dep("1"): 100, dep("2"): 0}, restore=True)
    assert effects[2] == DeleteDeployment(deployment=dep("2"))
    assert h.state.history[-1].promotion_id == old_id
    assert h.state.history[-1].outcome == S.ROLLED_BACK
    assert "superseded" in h.state.history[-1].reason
    assert h.active.candidate_version == "3" and h.status == S.DEPLOYING


def test_refused_approval_is_recorded_with_the_reason() -> None:
    h = awaiting_approval()
    decision = h.send(approve(h, approver="mallory"))
    assert decision.ignored == "mallory is not an allowed approver"
    assert decision.audit[0].action == "approval.refused"
    assert decision.audit[0].detail["reason"] == decision.ignored


def test_history_is_bounded() -> None:
    h = fresh()
    for version in range(2, 30):
        h.start(str(version), quality="fail")
    assert len(h.state.history) == 20
    assert h.state.history[-1].candidate_version == "29"


def test_state_round_trips_through_json() -> None:
    for given in (fresh, staging_gate, awaiting_approval, canary, production_bake, paused(canary)):
        state = given().state
        assert PromotionState.model_validate_json(state.model_dump_json()) == state
    assert PromotionState() == PromotionState.model_validate_json("{}")
