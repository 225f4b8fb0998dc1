"""The production bake with a concurrent holdback (policy `production_holdback`): the traffic
map, what the endpoint should serve, the bake's test for harm and its design, and what missing
or too few metrics do. Pure: the machine driven through its own commands."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.effects import DeleteDeployment, SendMessage, SetTraffic
from domain.metrics import ArmStats, LiveMetrics
from domain.policy import PolicyError, parse_policy
from promotion.canary_design import bake_boundary
from promotion.commands import (
    DeploymentReady,
    GateCheck,
    PausePromotion,
    PromoteNow,
    ResumePromotion,
)
from promotion.drift import expected_endpoint
from promotion.gates import judge_bake_look
from promotion.machine import observation_needed
from promotion.sequential import (
    alpha_increment,
    crossing_probabilities,
    spending_boundaries,
    spent_alpha,
)
from promotion.state import PromotionState, PromotionStatus

from .support import T0, Harness, dep, make_policy, with_champion

S = PromotionStatus
OLD, NEW = dep("1"), dep("2")
EVERY = timedelta(minutes=30)  # make_policy's canary.bake: the bake looks this often


def canary_with_holdback(holdback: int = 5, **policy: object) -> Harness:
    h = Harness(make_policy(production_holdback=holdback, **policy), with_champion())
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment))
    assert h.status == S.CANARY
    return h


def baking(holdback: int = 5, **policy: object) -> Harness:
    """In the production bake with a holdback (a person's promote-now skips the canary)."""
    h = canary_with_holdback(holdback, **policy)
    h.send(PromoteNow(promotion_id=h.active.id, reason="test", requested_by="carol"))
    assert h.status == S.PRODUCTION_BAKE
    return h


def counts(deployment: str, requests: int, errors: int, correct: int | None = None) -> ArmStats:
    """Every request labeled; `correct` defaults to 90 % of them."""
    right = round(0.9 * requests) if correct is None else correct
    return ArmStats(
        deployment=deployment, requests=requests, errors=errors, labeled=requests, correct=right
    )


def check(h: Harness, *arms: ArmStats | None) -> GateCheck:
    """The pending bake check, with these arms' counts over the bake so far (None arms left
    out; no arm at all: the metrics could not be read)."""
    command = h.check("pass")
    present = {arm.deployment: arm for arm in arms if arm is not None}
    live = (
        LiveMetrics(window_start=h.active.step_started_at, window_end=h.now, arms=present)
        if present
        else None
    )
    return command.model_copy(update={"live": live})


def healthy(h: Harness, hours: float) -> GateCheck:
    """Both arms as good as each other: 11,400 / 600 requests per hour (95 / 5)."""
    return check(
        h,
        counts(NEW, round(11_400 * hours), round(114 * hours)),
        counts(OLD, round(600 * hours), round(6 * hours)),
    )


def actions(h: Harness) -> list[str]:
    return [entry.action for entry in h.last.audit]  # type: ignore[union-attr]


# --- policy ------------------------------------------------------------------------------------

BASE = "model: m\nendpoint: m-endpoint\ndata: {container: m-data}\n"


def test_the_holdback_defaults_to_5_percent_and_the_bake_stays_a_duration() -> None:
    policy = parse_policy(BASE + "production_bake: 2h\n")
    assert policy.production_holdback == 5
    assert policy.production_bake == timedelta(hours=2)
    assert parse_policy(BASE + "production_holdback: 0\n").production_holdback == 0


@pytest.mark.parametrize("value", ["-1", "51", "five", "5.5"])
def test_a_bad_holdback_names_the_file_and_the_field(value: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(BASE + f"production_holdback: {value}\n", "policies/m.yml")
    assert raised.value.path == "policies/m.yml"
    assert raised.value.field == "production_holdback"


def test_a_canary_bake_of_zero_is_refused_naming_the_field() -> None:
    # A waiting step, and a bake with a holdback, look every canary.bake: 0 would look again
    # at once, for ever.
    for extra in ("", "production_holdback: 0\n"):
        with pytest.raises(PolicyError) as raised:
            parse_policy(BASE + "canary: {bake: 0s}\n" + extra, "policies/m.yml")
        assert raised.value.field == "canary.bake"
        assert "longer than zero" in raised.value.reason


# --- the traffic map, and what the endpoint should serve ---------------------------------------


def test_the_bake_holds_back_a_share_on_the_previous_deployment() -> None:
    h = baking()
    traffic = [e.traffic for e in h.last.effects if isinstance(e, SetTraffic)]  # type: ignore[union-attr]
    assert traffic == [{NEW: 95, OLD: 5}]
    assert h.active.holdback == 5 and h.active.traffic_weight == 95
    assert h.active.baseline_window is None  # concurrent: no earlier window
    # The champion is the candidate; the known-good model is still the old one.
    assert h.state.champion.version == "2"  # type: ignore[union-attr]
    assert h.state.last_known_good.version == "1"  # type: ignore[union-attr]
    # Reconcile expects exactly the map the outbox sends.
    expected = expected_endpoint(h.state)
    assert expected is not None
    assert expected.traffic == {NEW: 95, OLD: 5}
    assert expected.deployments == {NEW: "2", OLD: "1"}
    # The first look is after canary.bake, not at the end of the bake.
    sends = [e for e in h.last.effects if isinstance(e, SendMessage)]  # type: ignore[union-attr]
    assert sends[-1].not_before == h.now + EVERY
    assert h.active.step_deadline == h.now + h.policy.production_bake


def test_both_arms_are_read_over_the_same_window() -> None:
    h = baking()
    command = h.check("pass")
    request = observation_needed(h.state, command, h.policy, h.now)
    assert request is not None and request.kind == "live"
    assert [arm.deployment for arm in request.arms] == [NEW, OLD]
    assert {(arm.window_start, arm.window_end) for arm in request.arms} == {
        (h.active.step_started_at, h.now)
    }


def test_a_last_canary_step_that_passes_goes_to_the_holdback() -> None:
    h = canary_with_holdback()
    h.send(h.check("pass"))
    h.send(h.check("pass"))
    assert h.status == S.PRODUCTION_BAKE
    traffic = [e.traffic for e in h.last.effects if isinstance(e, SetTraffic)]  # type: ignore[union-attr]
    assert traffic == [{NEW: 95, OLD: 5}]


def test_a_first_model_has_no_holdback() -> None:
    h = Harness(make_policy(production_holdback=5), PromotionState())
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment))
    assert h.status == S.PRODUCTION_BAKE and h.active.holdback == 0
    traffic = [e.traffic for e in h.last.effects if isinstance(e, SetTraffic)]  # type: ignore[union-attr]
    assert traffic == [{NEW: 100}]
    assert expected_endpoint(h.state).traffic == {NEW: 100}  # type: ignore[union-attr]


def test_no_holdback_keeps_the_bake_of_before() -> None:
    h = baking(holdback=0)
    traffic = [e.traffic for e in h.last.effects if isinstance(e, SetTraffic)]  # type: ignore[union-attr]
    assert traffic == [{NEW: 100, OLD: 0}]
    assert expected_endpoint(h.state).traffic == {NEW: 100}  # type: ignore[union-attr]
    sends = [e for e in h.last.effects if isinstance(e, SendMessage)]  # type: ignore[union-attr]
    assert sends[-1].not_before == h.now + h.policy.production_bake


# --- the bake's verdicts -----------------------------------------------------------------------


def test_no_harm_looks_on_then_completes_and_removes_the_holdback() -> None:
    h = baking()
    h.send(healthy(h, 0.5))
    assert h.status == S.PRODUCTION_BAKE
    assert "gate.look" in actions(h) and "gate.inconclusive" in actions(h)
    assert h.active.looks[-1].step == "bake"
    assert h.active.inconclusive == 0  # a look of the running bake is no extension
    h.send(healthy(h, 1.0))
    assert h.status == S.COMPLETED
    moved = [e for e in h.last.effects if isinstance(e, SetTraffic | DeleteDeployment)]  # type: ignore[union-attr]
    # Traffic all on the candidate first, then the old deployment deleted.
    assert moved == [SetTraffic(traffic={NEW: 100}), DeleteDeployment(deployment=OLD)]
    assert h.state.last_known_good.version == "2"  # type: ignore[union-attr]
    assert expected_endpoint(h.state).traffic == {NEW: 100}  # type: ignore[union-attr]


def test_harm_shown_at_a_look_rolls_back_at_once() -> None:
    h = baking()
    # The candidate errs on 8 % of its requests, the holdback on 1 % (margin 0.02).
    h.send(check(h, counts(NEW, 2_850, 228), counts(OLD, 300, 3)))
    assert h.status == S.ROLLED_BACK
    effects = h.last.effects  # type: ignore[union-attr]
    moved = [e for e in effects if isinstance(e, SetTraffic | DeleteDeployment)]
    assert moved == [
        SetTraffic(traffic={OLD: 100, NEW: 0}, restore=True),
        DeleteDeployment(deployment=NEW),
    ]
    assert "harm" in h.state.history[-1].reason
    assert h.state.champion.version == "1"  # type: ignore[union-attr]


def test_the_evidence_shows_the_harm_design_and_its_boundary() -> None:
    h = baking()
    h.send(check(h, counts(NEW, 2_850, 228), counts(OLD, 300, 3)))
    failed = next(entry for entry in h.last.audit if entry.action == "gate.failed")  # type: ignore[union-attr]
    gate = next(e for e in failed.detail["evidence"] if e["gate"] == "canary:error_rate")
    assert gate["outcome"] == "fail" and gate["test"] == "farrington_manning:harm"
    assert gate["design"]["rule"] == "harm" and gate["design"]["holdback"] == 5
    assert gate["statistic"] <= gate["fail_boundary"] < 0
    # The look's place on the bake's clock is its schedule (30 of 60 min), not its delivery.
    assert gate["look"] == 1 and gate["information_fraction"] == pytest.approx(0.5)
    look = next(entry for entry in h.last.audit if entry.action == "gate.look")  # type: ignore[union-attr]
    assert look.detail["step"] == "bake" and look.detail["outcome"] == "fail"
    assert look.detail["gates"]["error_rate"]["information"] > 0


def test_a_candidate_worse_within_the_margin_is_not_rolled_back() -> None:
    h = baking()
    # 1.5 points more errors than the holdback: inside the 2-point margin.
    h.send(check(h, counts(NEW, 2_850, 71), counts(OLD, 150, 1)))
    assert h.status == S.PRODUCTION_BAKE
    h.send(check(h, counts(NEW, 5_700, 142), counts(OLD, 300, 3)))
    assert h.status == S.COMPLETED


def test_a_holdback_too_small_to_test_passes_on_time_with_the_candidates_samples() -> None:
    h = baking()
    h.send(check(h, counts(NEW, 500, 5), counts(OLD, 20, 0)))
    h.send(check(h, counts(NEW, 1_000, 10), counts(OLD, 40, 0)))
    assert h.status == S.COMPLETED
    passed = next(entry for entry in h.last.audit if entry.action == "gate.passed")  # type: ignore[union-attr]
    reasons = {e["gate"]: e["reason"] for e in passed.detail["evidence"]}
    assert "harm not testable" in reasons["canary:error_rate"]


@pytest.mark.parametrize("on_exhausted", ["pause", "promote"])
def test_too_few_candidate_samples_never_pass(on_exhausted: str) -> None:
    h = baking(canary={**make_policy().canary.model_dump(), "on_exhausted": on_exhausted})
    h.send(check(h, counts(NEW, 50, 0), counts(OLD, 3, 0)))
    h.send(check(h, counts(NEW, 100, 0), counts(OLD, 5, 0)))
    assert h.status == S.PRODUCTION_BAKE and h.active.inconclusive == 1
    assert "gate.extended" in actions(h)
    h.send(check(h, counts(NEW, 150, 0), counts(OLD, 8, 0)))  # max_extensions 1: exhausted
    assert h.status == S.PRODUCTION_BAKE and h.active.paused
    exhausted = next(entry for entry in h.last.audit if entry.action == "gate.exhausted")  # type: ignore[union-attr]
    assert exhausted.detail["on_exhausted"] == "pause"
    assert h.state.last_known_good.version == "1"  # type: ignore[union-attr]
    # Resumed, the bake keeps its end: the extensions start again, the samples now arrive.
    deadline = h.active.step_deadline
    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="ops"))
    assert h.active.step_deadline == deadline and h.active.inconclusive == 0
    h.send(check(h, counts(NEW, 400, 4), counts(OLD, 21, 0)))
    assert h.status == S.COMPLETED


def test_a_candidate_without_labels_does_not_pass_its_bake() -> None:
    h = baking()
    unlabeled = ArmStats(deployment=NEW, requests=5_700, errors=57)  # no label arrived
    h.send(check(h, unlabeled, counts(OLD, 150, 1)))
    h.send(check(h, unlabeled, counts(OLD, 300, 3)))
    assert h.status == S.PRODUCTION_BAKE and h.active.inconclusive == 1
    extended = next(entry for entry in h.last.audit if entry.action == "gate.inconclusive")  # type: ignore[union-attr]
    [samples] = [e for e in extended.detail["evidence"] if e["gate"] == "samples"]
    assert samples["reason"] == "candidate below 200 samples: accuracy"


def test_missing_metrics_never_pass_and_roll_back_when_the_policy_says_so() -> None:
    h = baking(canary={**make_policy().canary.model_dump(), "on_exhausted": "rollback"})
    h.send(check(h))  # unreadable at the first look: nothing judged, the bake goes on
    assert h.status == S.PRODUCTION_BAKE and h.active.looks == ()
    h.send(check(h, counts(NEW, 5_700, 57)))  # the holdback's metrics are missing
    assert h.status == S.PRODUCTION_BAKE and h.active.inconclusive == 1
    h.send(check(h))
    assert h.status == S.ROLLED_BACK


def test_a_pause_stops_the_bakes_clock() -> None:
    h = baking()
    deadline = h.active.step_deadline
    assert deadline is not None
    h.send(PausePromotion(promotion_id=h.active.id, requested_by="ops", reason="incident"))
    h.send(ResumePromotion(promotion_id=h.active.id, requested_by="ops"), timedelta(hours=2))
    assert h.active.step_deadline == deadline + timedelta(hours=2)
    # Resumed, its next look counts only the bake's own time (not the pause) toward its end.
    h.send(healthy(h, 0.5))
    assert h.status == S.PRODUCTION_BAKE


def test_the_holdback_is_fixed_when_the_bake_starts() -> None:
    h = baking()
    h.policy = make_policy(production_holdback=20)
    assert expected_endpoint(h.state).traffic == {NEW: 95, OLD: 5}  # type: ignore[union-attr]


def harmful(h: Harness, hours: float) -> GateCheck:
    """The candidate errs on 8 % of its requests, the holdback on 1 % (margin 0.02)."""
    return check(
        h,
        counts(NEW, round(11_400 * hours), round(912 * hours)),
        counts(OLD, round(600 * hours), round(6 * hours)),
    )


def look_fractions(h: Harness) -> list[float]:
    return [look.gates["error_rate"].fraction for look in h.active.looks]


def on_the_clock(h: Harness, length: timedelta) -> float:
    """The pending look's place on a bake of `length` (the bake started the step)."""
    assert h.active.check_due_at is not None
    return (h.active.check_due_at - h.active.step_started_at) / length


def test_a_policy_edit_mid_bake_keeps_the_bakes_own_length() -> None:
    h = baking(production_bake=timedelta(hours=4))  # looks every 30 min
    assert h.active.bake_duration == timedelta(hours=4)
    expected = [on_the_clock(h, timedelta(hours=4))]
    h.send(healthy(h, 0.5))
    h.policy = make_policy(production_holdback=5, production_bake=timedelta(hours=8))
    expected.append(on_the_clock(h, timedelta(hours=4)))
    h.send(healthy(h, 1.0))
    h.policy = make_policy(production_holdback=5, production_bake=timedelta(hours=2))
    expected.append(on_the_clock(h, timedelta(hours=4)))
    h.send(healthy(h, 1.5))
    # The bake's clock is its own 4 hours, whatever the policy says now.
    assert look_fractions(h) == pytest.approx(expected)
    # A look that shows harm is judged on that clock (the edited length made it crash).
    harm_at = on_the_clock(h, timedelta(hours=4))
    h.send(harmful(h, 2.0))
    assert h.status == S.ROLLED_BACK
    look = next(entry for entry in h.last.audit if entry.action == "gate.look")  # type: ignore[union-attr]
    assert look.detail["gates"]["error_rate"]["fraction"] == pytest.approx(harm_at)
    assert "harm" in h.state.history[-1].reason


def test_a_state_saved_before_the_bakes_length_was_kept_still_loads_and_judges() -> None:
    h = baking(production_bake=timedelta(hours=4))
    h.send(healthy(h, 0.5))
    h.send(healthy(h, 1.0))
    saved = h.state.model_dump(mode="json")
    saved["active"].pop("bake_duration", None)  # written by the code before the field
    h.state = PromotionState.model_validate(saved)
    assert h.active.bake_duration is None  # the policy's length, as before
    # Shortened meanwhile: 2.5 h left of a "2 h" bake would put this look before the last.
    h.policy = make_policy(production_holdback=5, production_bake=timedelta(hours=2))
    h.send(harmful(h, 1.5))
    # A look never goes back on the bake's clock: it stands with the last (no alpha left to
    # spend at it, so it cannot fail), and the bake runs on.
    assert h.status == S.PRODUCTION_BAKE
    first, last, now = look_fractions(h)
    assert first < last == now


def test_a_check_delivered_late_is_judged_as_the_look_it_was_scheduled_for() -> None:
    h = baking()
    command = healthy(h, 0.5)
    h.send(command, advance=timedelta(hours=3))  # long past the bake's end
    assert h.status == S.PRODUCTION_BAKE  # the first look, not the end
    assert h.active.looks[-1].gates["error_rate"].fraction == pytest.approx(0.5)


def test_state_with_a_holdback_round_trips_through_json() -> None:
    h = baking()
    h.send(healthy(h, 0.5))
    text = h.state.model_dump_json()
    assert PromotionState.model_validate_json(text) == h.state


# --- the harm test's error rates ---------------------------------------------------------------


def test_bake_boundaries_spend_alpha_exactly_when_information_runs_off_the_clock() -> None:
    # Looks at 1/4, 1/2, 1 of the bake's time; the information grows unevenly (traffic moved).
    clock, information = (0.25, 0.5, 1.0), (100.0, 400.0, 500.0)
    bounds = spending_boundaries(clock, 0.05, "obrien_fleming", information)
    crossing = crossing_probabilities(bounds, tuple(i / information[-1] for i in information))
    spent = [spent_alpha(t, 0.05, "obrien_fleming") for t in clock]
    increments = [spent[0], spent[1] - spent[0], spent[2] - spent[1]]
    assert crossing == pytest.approx(increments, abs=1e-6)
    assert sum(crossing) == pytest.approx(0.05, abs=1e-6)
    # Only the information's ratios matter.
    scaled = spending_boundaries(clock, 0.05, "obrien_fleming", [10 * i for i in information])
    assert scaled == pytest.approx(bounds, abs=1e-6)
    # The same clock for both: the canary's boundaries.
    assert spending_boundaries(clock, 0.05, "obrien_fleming", clock) == pytest.approx(
        spending_boundaries(clock, 0.05, "obrien_fleming"), abs=1e-6
    )
    assert bake_boundary(clock, information, 0.05, "obrien_fleming") == pytest.approx(bounds[-1])


def test_a_look_without_new_information_carries_its_alpha_to_the_next() -> None:
    bounds = spending_boundaries((0.5, 0.75, 1.0), 0.05, "pocock", (100.0, 100.0, 200.0))
    assert bounds[1] == float("inf")
    crossing = crossing_probabilities((bounds[0], bounds[2]), (0.5, 1.0))
    assert sum(crossing) == pytest.approx(0.05, abs=1e-6)


def test_alpha_increments_sum_to_alpha() -> None:
    clock = (0.2, 0.5, 0.5, 1.0, 1.0)
    total = sum(alpha_increment(clock[: k + 1], 0.05, "obrien_fleming") for k in range(5))
    assert total == pytest.approx(0.05)
    assert alpha_increment((0.5, 0.5), 0.05, "pocock") == 0


def test_judge_bake_look_waits_for_the_bakes_end_to_pass() -> None:
    policy = make_policy()
    arms = {NEW: counts(NEW, 5_700, 57), OLD: counts(OLD, 300, 3)}
    live = LiveMetrics(window_start=T0, window_end=T0, arms=arms)
    running = judge_bake_look(policy.canary, live, NEW, OLD, fraction=0.5, ended=False)
    assert running.outcome == "continue" and running.look is not None
    ended = judge_bake_look(
        policy.canary, live, NEW, OLD, fraction=1.0, ended=True, looks=(running.look,)
    )
    # No new samples since the look before: nothing to judge, and still a pass on time.
    assert ended.outcome == "pass" and ended.look is None
