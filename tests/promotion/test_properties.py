"""Properties over random message histories.

A small simulated world drives `decide`: scheduled messages, deployments that become ready or
fail, approvals, a stranger's approval, newer candidates, rollback requests, pauses and resumes
all interleave in a random order, and a fake endpoint applies the effects. The world records
what it delivered; the trace is then replayed with every message delivered 1 to 3 times, the
repeats at random later points (see `tied_to_pause` for the few that land before the next pause
or resume). Every repeat must change nothing and be recorded as ignored or refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.decision import Decision
from domain.effects import (
    DeleteDeployment,
    DeployModel,
    RequestApproval,
    SendMessage,
    SetTraffic,
)
from domain.policy import ModelPolicy
from promotion.commands import (
    COMMANDS,
    ApprovalDecision,
    DeploymentFailed,
    DeploymentReady,
    GateCheck,
    PausePromotion,
    PromotionCommand,
    ResumePromotion,
    RollbackRequested,
    StartPromotion,
)
from promotion.machine import decide
from promotion.state import PromotionState

from .support import APPROVER, T0, Quality, make_policy, observe, with_champion

MAX_CANDIDATES = 6  # below the queue limit, so a queued version is never dropped


@st.composite
def policies(draw: st.DrawFn) -> ModelPolicy:
    return make_policy(
        approval={
            "required": draw(st.booleans()),
            "approvers": [APPROVER],
            "on_timeout": draw(st.sampled_from(["reject", "approve"])),
        },
        canary={
            "steps": draw(st.sampled_from([[], [10], [10, 50], [5, 25, 50]])),
            "bake": "30m",
            "min_samples_per_arm": 200,
            "max_extensions": draw(st.integers(0, 2)),
            "on_exhausted": draw(st.sampled_from(["rollback", "promote"])),
            "gates": [{"metric": "error_rate", "margin": 0.02}, {"metric": "accuracy"}],
        },
        on_newer_candidate=draw(st.sampled_from(["queue", "supersede"])),
    )


@dataclass
class World:
    policy: ModelPolicy
    state: PromotionState
    now: datetime = T0
    inflight: list[tuple[PromotionCommand, datetime]] = field(default_factory=list)
    deployments: set[str] = field(default_factory=set)
    traffic: dict[str, int] = field(default_factory=dict)
    trace: list[tuple[datetime, PromotionCommand]] = field(default_factory=list)
    # Per trace entry: was the active promotion paused when it was delivered?
    paused: list[bool] = field(default_factory=list)
    candidates: int = 0

    def __post_init__(self) -> None:
        known_good = self.state.last_known_good
        if known_good is not None:
            self.deployments = {known_good.deployment}
            self.traffic = {known_good.deployment: 100}

    def serving(self) -> dict[str, int]:
        return {name: weight for name, weight in self.traffic.items() if weight}


def new_candidate(world: World) -> StartPromotion:
    world.candidates += 1
    return StartPromotion(candidate_version=str(world.candidates + 1))


def step(world: World, data: st.DataObject, *, with_pause: bool) -> None:
    active = world.state.active
    actions = ["deliver"] * 6 if world.inflight else []
    if world.candidates < MAX_CANDIDATES:
        actions.append("candidate")
    if active is not None:
        actions += ["rollback", "stranger"]
        if with_pause:
            actions += ["pause", "resume"]
    if not actions:
        return
    action = data.draw(st.sampled_from(actions))
    not_before = world.now
    command: PromotionCommand
    if action == "deliver":
        command, not_before = world.inflight.pop(data.draw(st.integers(0, len(world.inflight) - 1)))
    elif action == "candidate":
        command = new_candidate(world)
    elif action == "rollback":
        assert active is not None
        command = RollbackRequested(promotion_id=active.id, reason="ops", requested_by="ops")
    elif action == "stranger":
        assert active is not None
        command = ApprovalDecision(
            promotion_id=active.id,
            step=active.step,
            candidate_version=active.candidate_version,
            decision="approve",
            approver="mallory",
        )
    elif action == "pause":
        assert active is not None
        command = PausePromotion(promotion_id=active.id, requested_by="ops")
    else:
        assert active is not None
        command = ResumePromotion(promotion_id=active.id, requested_by="ops")
    world.now = max(world.now + timedelta(minutes=1), not_before)

    quality: Quality | None = None
    if isinstance(command, GateCheck | StartPromotion):
        quality = data.draw(st.sampled_from(["pass", "pass", "pass", "fail", "few", "none"]))
        command = observe(world.state, command, world.policy, world.now, quality)

    before = world.state
    decision = decide(before, command, world.policy, world.now)
    world.state = decision.state
    world.trace.append((world.now, command))
    world.paused.append(before.active is not None and before.active.paused)
    check_invariants(world, before, decision, quality)
    apply_effects(world, decision, data)

    # Content-based idempotence: the same command decided again changes nothing, and says so.
    again = decide(decision.state, command, world.policy, world.now)
    assert_recorded_repeat(again, decision.state, command)


def assert_recorded_repeat(
    decision: Decision[PromotionState], state: PromotionState, command: PromotionCommand
) -> None:
    """A repeat changed nothing and was recorded: one `command.ignored` (or, for an approval,
    `approval.refused`) audit entry naming the command and the reason."""
    name = type(command).__name__
    assert decision.ignored, f"repeat of {name} was not ignored"
    assert decision.state == state and not decision.effects, f"repeat of {name} changed something"
    action = "approval.refused" if isinstance(command, ApprovalDecision) else "command.ignored"
    assert [entry.action for entry in decision.audit] == [action], f"repeat of {name} unrecorded"
    assert decision.audit[0].detail == {"command": name, "reason": decision.ignored}


def check_invariants(
    world: World, before: PromotionState, decision: Decision[PromotionState], quality: Any
) -> None:
    state = decision.state
    if decision.ignored:
        assert state is before and not decision.effects
    # Never two active candidates.
    if state.active is not None:
        assert state.active.candidate_version not in {q.version for q in state.queued}
    # No gate passes on missing metrics or too few samples.
    if quality in ("few", "none"):
        assert "gate.passed" not in {entry.action for entry in decision.audit}
    for effect in decision.effects:
        if isinstance(effect, SetTraffic):
            assert sum(effect.traffic.values()) == 100


def apply_effects(world: World, decision: Decision[PromotionState], data: st.DataObject) -> None:
    state = decision.state
    for effect in decision.effects:
        if isinstance(effect, DeployModel):
            if effect.deployment in world.deployments:
                continue  # there already: a no-op (a rollback makes sure of the known-good)
            world.deployments.add(effect.deployment)
            assert state.active is not None
            outcome = data.draw(st.sampled_from(["ready", "ready", "ready", "failed"]))
            reply: PromotionCommand = (
                DeploymentReady(promotion_id=state.active.id, deployment=effect.deployment)
                if outcome == "ready"
                else DeploymentFailed(
                    promotion_id=state.active.id, deployment=effect.deployment, error="boom"
                )
            )
            world.inflight.append((reply, world.now))
        elif isinstance(effect, SetTraffic):
            assert set(effect.traffic) <= world.deployments, "traffic to a missing deployment"
            world.traffic = dict(effect.traffic)
        elif isinstance(effect, DeleteDeployment):
            if world.traffic.get(effect.deployment, 0):
                # Only the first model's rollback may remove what serves: nothing else can.
                assert state.last_known_good is None and state.champion is None
            world.deployments.discard(effect.deployment)
            world.traffic.pop(effect.deployment, None)
        elif isinstance(effect, SendMessage):
            command = COMMANDS[effect.message_type].model_validate(effect.payload)
            assert effect.not_before is not None
            world.inflight.append((command, effect.not_before))  # type: ignore[arg-type]
        elif isinstance(effect, RequestApproval):
            answer = data.draw(st.sampled_from(["approve", "approve", "reject"]))
            world.inflight.append(
                (
                    ApprovalDecision(
                        promotion_id=effect.promotion_id,
                        step=effect.step,
                        candidate_version=effect.candidate_version,
                        decision=answer,
                        approver=APPROVER,
                    ),
                    world.now,
                )
            )
    # The endpoint never holds more than production and one candidate.
    assert len(world.deployments) <= 2
    # After any rollback all traffic is on the known-good version (or nothing serves).
    if any(entry.action == "promotion.rolling_back" for entry in decision.audit):
        known_good = state.last_known_good
        assert world.serving() == ({known_good.deployment: 100} if known_good else {})
        assert state.champion == known_good
    # What serves is what the state says serves.
    if state.champion is not None:
        assert world.serving().get(state.champion.deployment, 0) > 0
    else:
        assert world.serving() == {}


def run_world(data: st.DataObject, *, with_pause: bool) -> tuple[World, PromotionState]:
    policy = data.draw(policies())
    initial = data.draw(st.sampled_from([PromotionState(), with_champion()]))
    world = World(policy=policy, state=initial)
    world.inflight.append((new_candidate(world), T0))
    for _ in range(data.draw(st.integers(10, 40))):
        step(world, data, with_pause=with_pause)
    return world, initial


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_histories_keep_the_invariants(data: st.DataObject) -> None:
    run_world(data, with_pause=True)


PAUSE_RESUME = (PausePromotion, ResumePromotion)


def tied_to_pause(command: PromotionCommand, paused: bool) -> bool:
    """Commands whose repeats are only content-idempotent until the next pause or resume.

    Pause and resume carry no content that ties them to one moment: a pause redelivered after a
    resume pauses again. An approval refused because the promotion was paused is, after the
    resume, indistinguishable from the answer given again (as the refusal asks). The service
    layer drops such redeliveries by message id (refused and ignored messages are remembered).
    """
    return isinstance(command, PAUSE_RESUME) or (isinstance(command, ApprovalDecision) and paused)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_repeated_deliveries_change_nothing(data: st.DataObject) -> None:
    # Pause/resume interleave with everything else; see `tied_to_pause` for where repeats land.
    world, initial = run_world(data, with_pause=True)
    trace = [command for _, command in world.trace]
    final_paused = world.state.active is not None and world.state.active.paused
    paused_after = [*world.paused[1:], final_paused]

    def changes_pause(j: int) -> bool:
        # A person's pause or resume, or anything that paused it (undecided gates, drift).
        return isinstance(trace[j], PAUSE_RESUME) or paused_after[j] != world.paused[j]

    schedule: list[tuple[int, bool]] = [(index, False) for index in range(len(trace))]
    for index, command in enumerate(trace):
        limit = None
        if tied_to_pause(command, world.paused[index]):
            limit = next((j for j in range(index + 1, len(trace)) if changes_pause(j)), None)
        for _ in range(data.draw(st.integers(0, 2))):
            after = schedule.index((index, False)) + 1
            last = len(schedule) if limit is None else schedule.index((limit, False))
            schedule.insert(data.draw(st.integers(after, last)), (index, True))

    state, now = initial, T0
    for index, repeat in schedule:
        when, command = world.trace[index]
        if not repeat:
            now = when
        decision = decide(state, command, world.policy, now)
        if repeat:
            assert_recorded_repeat(decision, state, command)
        state = decision.state
    assert state == world.state
