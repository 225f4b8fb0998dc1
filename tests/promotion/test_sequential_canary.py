"""The canary's group-sequential design through `decide`: a step waits for the samples the
design computes, looks at the planned information, carries its counts into the next step,
and never promotes on missing or too few metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.metrics import ArmStats, LiveMetrics
from promotion.canary_design import plan_gate
from promotion.commands import DeploymentReady, GateCheck, ResumePromotion
from promotion.explain import canary_samples
from promotion.state import PromotionStatus

from .support import T0, Harness, dep, make_policy, with_champion

S = PromotionStatus


def test_the_plan_matches_the_groundwork_numbers() -> None:
    """Shipped accuracy gate at power 0.8: the numbers docs/promotion.md lists."""
    plan = plan_gate("accuracy", 0.02, 0.05, 0.8, 0.90, (10, 25, 50), "obrien_fleming")
    assert [(t.candidate, t.production) for t in plan.targets] == [
        (564, 5071),
        (1188, 6942),
        (1899, 7653),
    ]
    assert [round(b, 3) for b in plan.design.boundaries] == [3.200, 2.141, 1.695]
    assert plan.unit == "labeled requests"


def policy(**canary: object):
    section = {
        "steps": [10, 50],
        "bake": "30m",
        "max_step_duration": "3h",
        "min_samples_per_arm": 100,
        "gates": [{"metric": "accuracy", "margin": 0.02}],
    } | canary
    return make_policy(canary=section)


def in_canary(**canary: object) -> Harness:
    h = Harness(policy(**canary), with_champion())
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment))
    assert h.status == S.CANARY
    return h


def targets(h: Harness) -> list[tuple[int, int]]:
    gate = h.policy.canary.gates[0]
    plan = plan_gate(
        "accuracy", gate.margin, gate.alpha, h.policy.canary.power, 0.9, (10, 50), "obrien_fleming"
    )
    return [(t.candidate, t.production) for t in plan.targets]


def check(h: Harness, canary: tuple[int, int], production: tuple[int, int]) -> GateCheck:
    """The pending check with the step's window: (labeled, correct) per arm."""
    active = h.active
    assert active.pending_check_id and active.check_due_at
    h.now = max(h.now, active.check_due_at)

    def arm(name: str, labeled: int, correct: int) -> ArmStats:
        return ArmStats(deployment=name, requests=labeled, labeled=labeled, correct=correct)

    live = LiveMetrics(
        window_start=active.step_started_at,
        window_end=h.now,
        arms={dep("2"): arm(dep("2"), *canary), dep("1"): arm(dep("1"), *production)},
    )
    return GateCheck(
        promotion_id=active.id, step=active.step, check_id=active.pending_check_id, live=live
    )


def at(n: int, rate: float) -> tuple[int, int]:
    return n, round(n * rate)


def test_a_step_waits_for_its_samples_then_looks_and_carries_its_counts() -> None:
    h = in_canary()
    (c1, p1), (c2, p2) = targets(h)
    # Half the step's samples: not a look, whatever the data says; checked again after a bake.
    h.send(check(h, at(c1 // 2, 0.9), at(p1 // 2, 0.9)))
    assert h.status == S.CANARY and h.active.step == "canary-1" and not h.active.looks
    evidence = {e.gate: e for e in h.active.gates[-1].evidence}
    assert evidence["canary:accuracy"].required == {"canary": c1, "production": p1}
    assert "waiting for samples" in evidence["canary:accuracy"].reason
    assert h.active.check_due_at == h.now + timedelta(minutes=30)
    # The step's samples, as good as production: look 1 is undecided (z ~ 1.5 < 3.2), so the
    # next step follows and the counts carry over.
    h.send(check(h, at(c1, 0.9), at(p1, 0.9)))
    assert h.active.step == "canary-2" and len(h.active.looks) == 1
    look = h.active.looks[0].gates["accuracy"]
    assert look.outcome == "continue" and look.fraction == pytest.approx(0.5, abs=0.01)
    assert h.active.canary_totals["canary"].labeled == c1
    assert h.active.canary_totals["production"].labeled == p1
    record = {e.gate: e for e in h.active.gates[-1].evidence}["canary:accuracy"]
    assert record.look == 1 and record.design is not None
    assert record.pass_boundary == pytest.approx(record.design["boundaries"][0], abs=1e-3)
    # Step 2's window adds to step 1's: the cumulative counts reach the design's maximum.
    h.send(check(h, at(c2 - c1, 0.9), at(p2 - p1, 0.9)))
    assert h.status in (S.PRODUCTION_BAKE, S.CANARY)
    record = {e.gate: e for e in h.active.gates[-1].evidence}["canary:accuracy"]
    assert record.samples == {"canary": c2, "production": p2}
    assert record.information_fraction == pytest.approx(1.0, abs=0.01)


def test_clearly_worse_rolls_back_at_the_first_look() -> None:
    h = in_canary()
    (c1, p1), _ = targets(h)
    h.send(check(h, at(c1, 0.80), at(p1, 0.90)))
    assert h.status == S.ROLLED_BACK


def test_clearly_as_good_passes_early_and_the_next_step_only_needs_its_floor() -> None:
    h = in_canary()
    (c1, p1), _ = targets(h)
    h.send(check(h, at(c1, 0.97), at(p1, 0.90)))  # far better: crosses 3.2 at look 1
    assert h.active.step == "canary-2" and h.active.looks[0].gates["accuracy"].outcome == "pass"
    h.send(check(h, at(150, 0.9), at(150, 0.9)))  # passed gates stay passed
    assert h.status == S.PRODUCTION_BAKE


def test_undecided_with_the_full_samples_follows_on_exhausted() -> None:
    for mode, status in (("pause", S.CANARY), ("rollback", S.ROLLED_BACK)):
        h = in_canary(on_exhausted=mode)
        (c1, p1), (c2, p2) = targets(h)
        h.send(check(h, at(c1, 0.88), at(p1, 0.9)))  # at the margin: undecided
        h.send(check(h, at(c2 - c1, 0.88), at(p2 - p1, 0.9)))
        assert h.status == status, mode
    # promote acts with full samples read: the candidate goes to production.
    h = in_canary(on_exhausted="promote")
    (c1, p1), (c2, p2) = targets(h)
    h.send(check(h, at(c1, 0.88), at(p1, 0.9)))
    h.send(check(h, at(c2 - c1, 0.88), at(p2 - p1, 0.9)))
    exhausted = next(a for a in h.last.audit if a.action == "gate.exhausted")  # type: ignore[union-attr]
    assert exhausted.detail["complete"] is True
    assert h.status == S.PRODUCTION_BAKE


@pytest.mark.parametrize("mode", ["pause", "rollback", "promote"])
@pytest.mark.parametrize("data", ["missing", "few"])
def test_missing_or_too_few_metrics_never_promote(mode: str, data: str) -> None:
    """Checks until the step's time runs out: whatever on_exhausted says, the candidate never
    reaches production on missing or too few metrics."""
    h = in_canary(on_exhausted=mode)
    for _ in range(20):
        if h.state.active is None or h.active.paused:
            break
        command = check(h, at(50, 0.9), at(450, 0.9))
        if data == "missing":
            command = command.model_copy(update={"live": None})
        h.send(command)
        assert h.state.active is None or h.status == S.CANARY
    assert h.status == (S.ROLLED_BACK if mode == "rollback" else S.CANARY)
    if mode != "rollback":
        assert h.active.paused and h.active.paused_by == "policy:on_exhausted"
        assert h.now >= T0 + timedelta(hours=3)  # the step waited max_step_duration


def test_resume_after_exhaustion_gives_the_step_time_again() -> None:
    h = in_canary(max_step_duration="30m")
    h.send(check(h, at(50, 0.9), at(450, 0.9)))
    assert h.active.paused
    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="ops"))
    assert not h.active.paused and h.active.step_deadline == h.now + timedelta(minutes=30)
    (c1, p1), _ = targets(h)
    h.send(check(h, at(c1, 0.97), at(p1, 0.9)))
    assert h.active.step == "canary-2"


def test_status_shows_the_samples_the_step_waits_for() -> None:
    h = in_canary()
    (c1, p1), (c2, p2) = targets(h)
    shown = canary_samples(h.active, h.policy)
    assert shown is not None and shown.look == 1
    gate = shown.gates[0]
    assert gate.required_this_step == {"canary": c1, "production": p1}
    assert gate.required_by_step[-1] == {"canary": c2, "production": p2}
    assert f"{c1:,} canary" in shown.summary and "paused" in shown.when_time_runs_out
    assert shown.deadline == h.active.step_started_at + timedelta(hours=3)


@pytest.mark.parametrize("missing", ["labels", "requests"])
def test_a_step_out_of_time_with_no_samples_at_all_pauses_and_never_crashes(
    missing: str,
) -> None:
    """No feedback (or no traffic) on the candidate by the step's deadline: its gates have no
    information to spend alpha on, so they stay undecided and on_exhausted applies."""
    h = in_canary(max_step_duration="30m")
    command = check(h, (0, 0), at(450, 0.9))
    if missing == "requests":
        arms = dict(command.live.arms)  # type: ignore[union-attr]
        arms[dep("2")] = ArmStats(deployment=dep("2"), requests=0, labeled=0, correct=0)
        command = command.model_copy(
            update={"live": command.live.model_copy(update={"arms": arms})}  # type: ignore[union-attr]
        )
    h.now = h.active.step_started_at + timedelta(minutes=31)  # past the deadline
    h.send(command)
    assert h.status == S.CANARY and h.active.paused
    assert h.active.paused_by == "policy:on_exhausted"
    assert all("accuracy" not in look.gates for look in h.active.looks)  # no look taken


def test_a_policy_edited_during_a_promotion_does_not_change_its_ramp() -> None:
    """The promotion walks the steps it started with: a step added to the policy meanwhile
    neither re-plans its looks nor lets an undecided last step reach production."""
    h = in_canary(on_exhausted="pause")
    (c1, p1), (c2, p2) = targets(h)
    h.send(check(h, at(c1, 0.88), at(p1, 0.9)))  # at the margin: undecided, next step
    assert h.active.step == "canary-2"
    h.policy = policy(on_exhausted="pause", steps=[10, 50, 75])  # edited meanwhile
    h.send(check(h, at(c2 - c1, 0.88), at(p2 - p1, 0.9)))
    assert h.status == S.CANARY and h.active.paused  # exhausted at its own last step
    assert h.active.paused_by == "policy:on_exhausted"


def test_a_pause_by_a_person_gives_the_step_back_the_time_it_lost() -> None:
    from promotion.commands import PausePromotion

    h = in_canary(max_step_duration="3h")
    deadline = h.active.step_deadline
    assert deadline is not None
    h.send(PausePromotion(promotion_id=h.active.id, requested_by="ops", reason="look first"))
    h.now += timedelta(hours=5)  # longer than the step's whole time
    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="ops"))
    assert not h.active.paused
    assert h.active.step_deadline == deadline + timedelta(hours=5, minutes=1)


def test_latency_looks_test_at_their_alpha_increments() -> None:
    """Latency windows are fresh per step: each look tests at the alpha its spending adds,
    which sums to alpha over the looks, not at the correlated boundary's nominal level."""
    from promotion.gates import judge_canary_look
    from promotion.sequential import alpha_increment

    policy = make_policy(
        canary={
            "steps": [10, 50],
            "min_samples_per_arm": 200,
            "gates": [{"metric": "latency_ms", "margin": 0.2}],
        }
    )
    # 300 samples each, the candidate 15 % slower: undecided at the first look's small level.
    spread = [float(10 + (i * 37) % 300) for i in range(300)]
    arms = {
        name: ArmStats(deployment=name, requests=300, latency_ms=[scale * v for v in spread])
        for name, scale in ((dep("2"), 1.15), (dep("1"), 1.0))
    }
    live = LiveMetrics(window_start=T0, window_end=T0, arms=arms)
    first = judge_canary_look(policy.canary, live, dep("2"), dep("1"), step_index=0)
    second = judge_canary_look(
        policy.canary,
        live,
        dep("2"),
        dep("1"),
        step_index=1,
        looks=(first.look,) if first.look else (),
    )
    levels = []
    for look in (first, second):
        [gate] = [e for e in look.result.evidence if e.gate == "canary:latency_ms"]
        levels.append(float(gate.reason.rsplit("level ", 1)[1].rstrip(")")))
    spent = [alpha_increment((0.5,), 0.05, "obrien_fleming"),
             alpha_increment((0.5, 1.0), 0.05, "obrien_fleming")]  # fmt: skip
    assert levels == pytest.approx(spent, rel=1e-2)
    assert sum(spent) == pytest.approx(0.05)
