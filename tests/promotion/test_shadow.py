"""The shadow stage: entered after the deployment is ready, judged on mirrored traffic, left
with the mirror off before the first live step or before the candidate is deleted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain.effects import DeleteDeployment, SetMirror, SetTraffic
from domain.metrics import ArmStats, ShadowMetrics
from domain.policy import PolicyError, ShadowGates, parse_policy
from promotion.commands import (
    DeploymentFailed,
    DeploymentReady,
    EndpointDrift,
    GateCheck,
    ResumePromotion,
    RollbackRequested,
)
from promotion.drift import ObservedDeployment, expected_endpoint, find_drift
from promotion.machine import decide, observation_needed, overdue_message
from promotion.shadow import judge_shadow
from promotion.state import PromotionState, PromotionStatus

from .support import T0, Harness, dep, make_policy, with_champion

Status = PromotionStatus
GATES = ShadowGates()


def shadow_policy(**shadow: Any) -> Any:
    settings = {"percent": 20, "duration": "30m", "check_every": "10m", "max_wait": "1h"}
    return make_policy(shadow=settings | shadow)


def window(
    requests: int = 2000,
    candidate_errors: int = 10,
    production_errors: int = 10,
    agreed: float = 0.99,
    candidate_ms: float = 20.0,
    production_ms: float = 20.0,
    latencies: bool = True,
) -> ShadowMetrics:
    def arm(name: str, errors: int, ms: float) -> ArmStats:
        spread = [ms * (1 + (i % 100) / 100) for i in range(requests)] if latencies else []
        return ArmStats(deployment=name, requests=requests, errors=errors, latency_ms=spread)

    pairs = requests - max(candidate_errors, production_errors)
    return ShadowMetrics(
        window_start=T0,
        window_end=T0 + timedelta(minutes=30),
        production=arm(dep("1"), production_errors, production_ms),
        candidate=arm(dep("2"), candidate_errors, candidate_ms),
        pairs=pairs,
        agreed=round(pairs * agreed),
    )


def in_shadow(policy: Any = None) -> Harness:
    h = Harness(policy or shadow_policy(), with_champion("1"))
    h.start("2")
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=dep("2")))
    return h


def shadow_check(h: Harness, metrics: ShadowMetrics | None) -> Any:
    check = h.check()
    request = observation_needed(h.state, check, h.policy, h.now)
    assert request is not None and request.kind == "shadow"
    assert [arm.deployment for arm in request.arms] == [dep("2"), dep("1")]
    return h.send(check.model_copy(update={"shadow": metrics}), advance=timedelta(0))


# --- the statistics ------------------------------------------------------------------------------


def test_a_candidate_like_production_passes_every_gate() -> None:
    look = judge_shadow(GATES, window())
    assert look.outcome == "pass"
    assert {e.gate for e in look.result.evidence} == {
        "shadow:error_rate",
        "shadow:latency_p95",
        "shadow:agreement",
    }


@pytest.mark.parametrize(
    ("change", "gate"),
    [
        ({"candidate_errors": 200}, "shadow:error_rate"),
        ({"candidate_ms": 40.0}, "shadow:latency_p95"),
        ({"agreed": 0.80}, "shadow:agreement"),
    ],
)
def test_each_gate_fails_a_candidate_clearly_worse_on_it(change: dict, gate: str) -> None:
    look = judge_shadow(GATES, window(**change))
    assert look.outcome == "fail"
    failed = [e.gate for e in look.result.evidence if e.outcome == "fail"]
    assert failed == [gate]


def test_agreement_just_at_the_floor_is_undecided_not_passed() -> None:
    # 95% observed against a 95% floor: neither one-sided test rejects.
    look = judge_shadow(GATES, window(agreed=0.95))
    agreement = next(e for e in look.result.evidence if e.gate == "shadow:agreement")
    assert agreement.outcome == "inconclusive"
    assert look.outcome == "undecided"
    low, high = agreement.interval or (0, 0)
    assert low < 0.95 < high


def test_too_few_samples_or_no_metrics_wait_and_never_pass() -> None:
    assert judge_shadow(GATES, None).outcome == "wait"
    few = judge_shadow(GATES, window(requests=50))
    assert few.outcome == "wait"
    assert few.result.evidence[0].gate == "samples"


def test_latencies_not_read_wait_as_too_few_samples() -> None:
    # Requests counted but no latency read (a traffic log without them): the look waits.
    look = judge_shadow(GATES, window(latencies=False))
    assert look.outcome == "wait"
    [samples] = look.result.evidence
    assert samples.gate == "samples" and samples.outcome == "inconclusive"
    assert samples.samples == {
        "production": 2000,
        "candidate": 2000,
        "pairs": 1990,
        "production latencies": 0,
        "candidate latencies": 0,
    }


def test_the_error_rate_gate_passes_a_worse_candidate_at_most_alpha_of_the_time() -> None:
    """Simulated: a candidate exactly at the margin (1% + 1%) passes in <= alpha of windows."""
    import numpy as np

    rng = np.random.default_rng(7)
    passes = 0
    runs = 400
    for _ in range(runs):
        candidate_errors = int(rng.binomial(3000, 0.02))
        production_errors = int(rng.binomial(3000, 0.01))
        metrics = window(
            requests=3000, candidate_errors=candidate_errors, production_errors=production_errors
        )
        look = judge_shadow(GATES, metrics)
        error_rate = next(e for e in look.result.evidence if e.gate == "shadow:error_rate")
        passes += error_rate.outcome == "pass"
    assert passes / runs <= GATES.alpha + 0.03  # alpha plus simulation noise


# --- the policy ----------------------------------------------------------------------------------


def test_no_shadow_section_means_no_shadow_stage() -> None:
    assert make_policy().shadow is None
    h = Harness(make_policy(), with_champion("1"))
    h.start("2")
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=dep("2")))
    assert h.status == Status.CANARY
    assert not any(isinstance(e, SetMirror) for e in h.last.effects)  # type: ignore[union-attr]


def test_a_bad_shadow_section_names_its_field() -> None:
    text = "model: m\nendpoint: m-ep\ndata: {container: box}\nshadow: {percent: 60}\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policies/m.yml")
    assert caught.value.field == "shadow.percent"
    with pytest.raises(PolicyError, match=r"shadow\.gates\.min_agreement"):
        parse_policy(text.replace("percent: 60", "gates: {min_agreement: 1.5}"))


# --- the machine ---------------------------------------------------------------------------------


def test_ready_deployment_enters_the_shadow_with_the_mirror_on_and_production_untouched() -> None:
    h = in_shadow()
    assert h.status == Status.SHADOW and h.active.step == "shadow"
    assert h.active.shadow_percent == 20
    effects = h.last.effects  # type: ignore[union-attr]
    assert SetMirror(mirror={dep("2"): 20}) in effects
    assert not any(isinstance(e, SetTraffic) for e in effects)
    assert h.active.check_due_at == h.now + timedelta(minutes=30)
    assert "promotion.shadow" in [a.action for a in h.last.audit]  # type: ignore[union-attr]


def test_a_passing_shadow_turns_the_mirror_off_before_the_first_live_step() -> None:
    h = in_shadow()
    shadow_check(h, window())
    assert h.status == Status.CANARY and h.active.step == "canary-1"
    kinds = [type(e) for e in h.last.effects if isinstance(e, (SetMirror, SetTraffic))]  # type: ignore[union-attr]
    assert kinds == [SetMirror, SetTraffic]
    assert SetMirror(mirror={}) in h.last.effects  # type: ignore[union-attr]
    assert h.active.shadow_percent == 0
    assert h.active.gates[-1].step == "shadow" and h.active.gates[-1].outcome == "pass"


def test_a_failing_shadow_rolls_back_mirror_off_then_delete_production_untouched() -> None:
    h = in_shadow()
    shadow_check(h, window(agreed=0.7))
    assert h.status == Status.ROLLED_BACK
    effects = h.last.effects  # type: ignore[union-attr]
    mirror_off = effects.index(SetMirror(mirror={}))
    delete = effects.index(DeleteDeployment(deployment=dep("2")))
    assert mirror_off < delete
    traffic = [e for e in effects if isinstance(e, SetTraffic)]
    assert all(e.traffic == {dep("1"): 100} for e in traffic)
    assert h.state.champion is not None and h.state.champion.version == "1"


def test_too_few_samples_wait_then_on_exhausted_pauses() -> None:
    h = in_shadow()
    few = window(requests=50)
    shadow_check(h, few)
    assert h.status == Status.SHADOW and not h.active.paused
    assert h.active.check_due_at == h.now + timedelta(minutes=10)
    # Until the deadline (30m + 1h max_wait), then canary.on_exhausted (pause).
    for _ in range(20):
        if h.active.paused:
            break
        shadow_check(h, few)
    assert h.active.paused and h.active.paused_by == "policy:on_exhausted"
    assert h.now >= h.active.step_started_at + timedelta(minutes=90)
    assert len([g for g in h.active.gates if g.step == "shadow"]) == 1  # one record per wait


def test_unreadable_metrics_never_pass_even_with_on_exhausted_promote() -> None:
    policy = shadow_policy(max_wait="10m")
    policy = policy.model_copy(
        update={"canary": policy.canary.model_copy(update={"on_exhausted": "promote"})}
    )
    h = in_shadow(policy)
    shadow_check(h, None)
    shadow_check(h, None)
    assert h.status == Status.SHADOW and h.active.paused


def test_latencies_not_read_wait_then_pause_even_with_on_exhausted_promote() -> None:
    policy = shadow_policy()
    promote = policy.model_copy(
        update={"canary": policy.canary.model_copy(update={"on_exhausted": "promote"})}
    )
    for chosen in (policy, promote):  # on_exhausted pause (the default), promote
        h = in_shadow(chosen)
        unread = window(latencies=False)
        shadow_check(h, unread)
        # Not a look: it waits (every check_every), not paused, not live.
        assert h.status == Status.SHADOW and not h.active.paused
        assert h.active.check_due_at == h.now + timedelta(minutes=10)
        for _ in range(20):
            if h.active.paused:
                break
            shadow_check(h, unread)
        # At the deadline (duration + max_wait) on_exhausted: promote pauses instead.
        assert h.status == Status.SHADOW and h.active.paused
        assert h.now >= h.active.step_started_at + timedelta(minutes=90)
        exhausted = next(e for e in h.last.audit if e.action == "gate.exhausted")
        assert exhausted.detail == {"step": "shadow", "on_exhausted": "pause", "complete": False}


def test_an_undecided_complete_look_follows_on_exhausted() -> None:
    policy = shadow_policy()
    rollback = policy.model_copy(
        update={"canary": policy.canary.model_copy(update={"on_exhausted": "rollback"})}
    )
    h = in_shadow(rollback)
    shadow_check(h, window(agreed=0.95))
    assert h.status == Status.ROLLED_BACK
    promote = policy.model_copy(
        update={"canary": policy.canary.model_copy(update={"on_exhausted": "promote"})}
    )
    h = in_shadow(promote)
    shadow_check(h, window(agreed=0.95))
    assert h.status == Status.CANARY


def test_resume_after_an_exhausted_shadow_checks_again() -> None:
    h = in_shadow(shadow_policy(max_wait="10m"))
    shadow_check(h, None)
    shadow_check(h, None)
    assert h.active.paused
    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="bob"))
    assert h.status == Status.SHADOW and not h.active.paused
    shadow_check(h, window())
    assert h.status == Status.CANARY


def test_rollback_and_deployment_failure_in_shadow_remove_the_mirror_first() -> None:
    for command in (
        lambda h: RollbackRequested(promotion_id=h.active.id, reason="no", requested_by="bob"),
        lambda h: DeploymentFailed(promotion_id=h.active.id, deployment=dep("2"), error="oom"),
    ):
        h = in_shadow()
        h.send(command(h))
        effects = h.last.effects  # type: ignore[union-attr]
        assert effects.index(SetMirror(mirror={})) < effects.index(
            DeleteDeployment(deployment=dep("2"))
        )


def test_a_stale_or_overdue_shadow_check() -> None:
    h = in_shadow()
    stale = GateCheck(promotion_id=h.active.id, step="shadow", check_id="other")
    assert decide(h.state, stale, h.policy, h.now).ignored
    late = overdue_message(h.state, h.now + timedelta(hours=1), timedelta(minutes=1))
    assert late is not None and late.payload["step"] == "shadow"


def test_a_first_model_skips_the_shadow_nothing_to_mirror() -> None:
    h = Harness(shadow_policy(), PromotionState())
    h.start("1")
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=dep("1")))
    assert h.status == Status.PRODUCTION_BAKE
    assert "shadow.skipped" in [a.action for a in h.last.audit]  # type: ignore[union-attr]


# --- what the endpoint should serve --------------------------------------------------------------


def test_the_expected_endpoint_in_shadow_has_the_mirror_and_production_at_100() -> None:
    h = in_shadow()
    expected = expected_endpoint(h.state)
    assert expected is not None
    assert expected.traffic == {dep("1"): 100}
    assert expected.mirror == {dep("2"): 20}
    assert set(expected.deployments) == {dep("1"), dep("2")}
    healthy = [ObservedDeployment(name=n, state="succeeded") for n in (dep("1"), dep("2"))]
    assert find_drift(expected, {dep("1"): 100}, healthy, {dep("2"): 20}) is None
    drift = find_drift(expected, {dep("1"): 100}, healthy, {})
    assert drift is not None and "mirror {} instead of" in drift.summary
    # After the shadow no mirror is expected: a left-over one is drift.
    shadow_check(h, window())
    after = expected_endpoint(h.state)
    assert after is not None and after.mirror == {}
    assert find_drift(after, after.traffic, healthy, {dep("2"): 20}) is not None


def test_a_mirror_drift_is_repaired_with_the_states_mirror() -> None:
    h = in_shadow(shadow_policy().model_copy(update={"on_drift": "repair"}))
    expected = expected_endpoint(h.state)
    assert expected is not None
    drift = EndpointDrift(
        expected_traffic=expected.traffic,
        actual_traffic=expected.traffic,
        expected_mirror=expected.mirror,
        actual_mirror={},
    )
    h.send(drift)
    assert SetMirror(mirror={dep("2"): 20}) in h.last.effects  # type: ignore[union-attr]
    # A drift read before the state moved on (no mirror expected then) is stale.
    stale = drift.model_copy(update={"expected_mirror": {}})
    assert h.send(stale).ignored
