"""A first model's production bake without the live traffic it needs, for each value of the
policy's `first_model.bake_without_traffic` (hold, pass, rollback), and what the status view
says about it (promotion/explain.py). Pure: the machine driven through its own commands."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.effects import DeleteDeployment, PublishEvent, SendMessage, SetTraffic
from domain.metrics import ArmStats, LiveMetrics
from domain.policy import PolicyError, parse_policy
from promotion.commands import (
    DeploymentReady,
    GateCheck,
    PausePromotion,
    PromoteNow,
    StartPromotion,
)
from promotion.explain import duration_text, first_model_bake
from promotion.state import PromotionState, PromotionStatus

from .support import T0, Harness, make_policy, with_champion

S = PromotionStatus
BAKE_EVERY = timedelta(minutes=30)  # make_policy's canary.bake: how often a held bake checks


def bake(mode: str | None = None, **policy: object) -> Harness:
    """A first model (nothing in production) in its production bake."""
    if mode is not None:
        policy["first_model"] = {"bake_without_traffic": mode}
    h = Harness(make_policy(**policy), PromotionState())
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment))
    assert h.status == S.PRODUCTION_BAKE and h.active.baseline is None
    return h


def served(h: Harness, requests: int | None, errors: int = 0) -> GateCheck:
    """The pending bake check, with the candidate's counts (None: metrics unreadable)."""
    check = h.check("pass")
    live = None
    if requests is not None:
        deployment = h.active.candidate_deployment
        arm = ArmStats(deployment=deployment, requests=requests, errors=errors)
        live = LiveMetrics(window_start=T0, window_end=h.now, arms={deployment: arm})
    return check.model_copy(update={"live": live})


def sent(h: Harness) -> list[SendMessage]:
    return [e for e in h.last.effects if isinstance(e, SendMessage)]  # type: ignore[union-attr]


def actions(h: Harness) -> list[str]:
    return [entry.action for entry in h.last.audit]  # type: ignore[union-attr]


def test_the_default_is_hold() -> None:
    policy = parse_policy("model: m\nendpoint: m-endpoint\ndata: {container: m-data}\n")
    assert policy.first_model.bake_without_traffic == "hold"


def test_an_unknown_value_names_the_field() -> None:
    text = (
        "model: m\nendpoint: m-endpoint\ndata: {container: m-data}\n"
        "first_model: {bake_without_traffic: wait}\n"
    )
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "m.yml")
    assert error.value.field == "first_model.bake_without_traffic"


# --- hold ---------------------------------------------------------------------------------------


def test_hold_waits_past_every_extension_then_completes_when_the_traffic_comes() -> None:
    h = bake()  # the default
    max_extensions = h.policy.canary.max_extensions
    gates_before = len(h.active.gates)
    for check in range(1, max_extensions + 4):
        command = served(h, requests=10 * check)  # at the check's due time
        due = h.now
        h.send(command, advance=timedelta(0))
        assert h.status == S.PRODUCTION_BAKE, f"check {check}"
        [again] = sent(h)
        assert again.not_before == due + BAKE_EVERY
        assert again.message_id == h.active.pending_check_id
        wait = h.active.traffic_wait
        assert wait is not None
        assert (wait.requests, wait.needed, wait.checks) == (10 * check, 200, check)
        assert "bake.waiting_for_traffic" in actions(h)
        assert h.active.inconclusive == 0  # no extension used up
        # One record for the whole wait, however long it lasts.
        assert len(h.active.gates) == gates_before + 1
    h.send(served(h, requests=200))
    assert h.status == S.COMPLETED
    assert h.state.champion is not None and h.state.last_known_good == h.state.champion
    assert h.state.champion.version == "2"


def test_hold_also_waits_when_the_metrics_cannot_be_read() -> None:
    h = bake("hold")
    h.send(served(h, requests=None))
    assert h.status == S.PRODUCTION_BAKE
    wait = h.active.traffic_wait
    assert wait is not None and wait.requests is None and wait.errors is None
    assert len(sent(h)) == 1


def test_a_person_completes_a_held_first_model_with_promote_now() -> None:
    h = bake("hold")
    h.send(served(h, requests=3))
    h.send(PromoteNow(promotion_id=h.active.id, reason="demo, no traffic", requested_by="carol"))
    assert h.status == S.COMPLETED
    assert h.state.last_known_good is not None and h.state.last_known_good.version == "2"
    # Nothing older to keep or remove: no traffic change, no delete; the event only.
    assert [type(e) for e in h.last.effects] == [PublishEvent]  # type: ignore[union-attr]
    done = h.last.audit[-1]  # type: ignore[union-attr]
    assert done.action == "promotion.completed" and done.detail["caused_by"] == "carol"
    assert "promotion.promote_now" in actions(h)


def test_promote_now_is_refused_for_a_paused_first_model_and_for_a_bake_with_a_baseline() -> None:
    h = bake("hold")
    h.send(PausePromotion(promotion_id=h.active.id, requested_by="ops"))
    decision = h.send(PromoteNow(promotion_id=h.active.id, reason="x", requested_by="carol"))
    assert decision.ignored and h.status == S.PRODUCTION_BAKE

    # A bake after a canary keeps the old deployment as the rollback target: never skipped.
    h = Harness(make_policy(canary={"steps": []}), with_champion())
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment))
    assert h.status == S.PRODUCTION_BAKE and h.active.baseline is not None
    decision = h.send(PromoteNow(promotion_id=h.active.id, reason="x", requested_by="carol"))
    assert decision.ignored and h.status == S.PRODUCTION_BAKE


def test_a_bake_with_a_baseline_still_uses_extensions_whatever_first_model_says() -> None:
    h = Harness(
        make_policy(canary={"steps": []}, first_model={"bake_without_traffic": "hold"}),
        with_champion(),
    )
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment))
    for _ in range(h.policy.canary.max_extensions):
        h.send(served(h, requests=5))
        assert h.active.inconclusive > 0 and h.active.traffic_wait is None
    h.send(served(h, requests=5))
    # canary.on_exhausted (default pause): a person decides, the candidate keeps serving.
    assert h.status == S.PRODUCTION_BAKE and h.active.paused
    assert h.active.paused_by == "policy:on_exhausted"


def test_a_bake_with_a_baseline_rolls_back_when_on_exhausted_says_so() -> None:
    h = Harness(
        make_policy(
            canary={"steps": [], "on_exhausted": "rollback", "max_extensions": 1},
            first_model={"bake_without_traffic": "hold"},
        ),
        with_champion(),
    )
    h.start()
    h.send(DeploymentReady(promotion_id=h.active.id, deployment=h.active.candidate_deployment))
    h.send(served(h, requests=5))
    h.send(served(h, requests=5))
    assert h.status == S.ROLLED_BACK  # to v1


# --- pass ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("requests", [0, 37])
def test_pass_completes_a_bake_that_served_no_errors(requests: int) -> None:
    h = bake("pass")
    h.send(served(h, requests=requests))
    assert h.status == S.COMPLETED
    assert "bake.passed_without_traffic" in actions(h)
    assert [type(e) for e in h.last.effects] == [PublishEvent]  # type: ignore[union-attr]
    reason = h.state.history[-1].reason
    assert f"{requests} of 200 requests, no errors" in reason
    assert "first_model.bake_without_traffic=pass" in reason


def test_pass_holds_a_bake_that_served_errors_until_the_samples_come() -> None:
    h = bake("pass")
    h.send(served(h, requests=12, errors=2))
    assert h.status == S.PRODUCTION_BAKE and len(sent(h)) == 1
    assert h.active.traffic_wait is not None and h.active.traffic_wait.errors == 2
    h.send(served(h, requests=250, errors=2))
    assert h.status == S.COMPLETED


def test_pass_never_completes_on_metrics_it_could_not_read() -> None:
    h = bake("pass")
    for _ in range(3):
        h.send(served(h, requests=None))
        assert h.status == S.PRODUCTION_BAKE
    h.send(served(h, requests=0))
    assert h.status == S.COMPLETED


# --- rollback -----------------------------------------------------------------------------------


@pytest.mark.parametrize("on_exhausted", ["rollback", "promote"])
def test_rollback_extends_then_removes_the_first_model(on_exhausted: str) -> None:
    canary = {"steps": [10, 50], "bake": "30m", "max_extensions": 2, "on_exhausted": on_exhausted}
    h = bake("rollback", canary=canary)
    for extension in (1, 2):
        h.send(served(h, requests=5))
        assert h.status == S.PRODUCTION_BAKE and h.active.inconclusive == extension
        assert h.active.traffic_wait is not None and h.active.traffic_wait.checks == extension
    h.send(served(h, requests=5))
    # The first model's own setting wins over canary.on_exhausted.
    assert h.status == S.ROLLED_BACK
    [rolling] = [a for a in h.last.audit if a.action == "promotion.rolling_back"]  # type: ignore[union-attr]
    assert "first_model.bake_without_traffic=rollback" in rolling.detail["cause"]
    assert [type(e) for e in h.last.effects][:1] == [DeleteDeployment]  # type: ignore[union-attr]
    assert not any(isinstance(e, SetTraffic) for e in h.last.effects)  # type: ignore[union-attr]
    assert h.last.audit[-1].detail["nothing_serves"] is True  # type: ignore[union-attr]
    assert h.state.champion is None and h.state.last_known_good is None


# --- the status view ----------------------------------------------------------------------------


def test_explain_before_the_first_check_says_what_it_needs() -> None:
    h = bake("hold")
    view = first_model_bake(h.active, h.policy)
    assert view is not None
    assert (view.needed, view.requests, view.checks_short) == (200, None, 0)
    assert view.next_check_at == h.now + timedelta(hours=1)
    assert "needs 200 requests" in view.summary and "not checked yet" in view.summary


@pytest.mark.parametrize(
    ("mode", "requests", "errors", "expected"),
    [
        ("hold", 40, 0, "keeps waiting, checked again every 30m with no end"),
        ("pass", 40, 3, "it served 3 error(s), so it completes only once it has 200"),
        ("rollback", 40, 0, "extended by 30m (0 of 1 extension(s) left)"),
    ],
)
def test_explain_a_bake_that_waits(mode: str, requests: int, errors: int, expected: str) -> None:
    h = bake(mode)
    check = served(h, requests=requests, errors=errors)
    h.send(check)
    assert h.status == S.PRODUCTION_BAKE
    view = first_model_bake(h.active, h.policy)
    assert view is not None
    assert view.bake_without_traffic == mode
    assert (view.requests, view.errors, view.needed) == (requests, errors, 200)
    assert f"{requests} of 200 requests" in view.summary
    assert view.next_check_at == h.active.check_due_at
    if mode == "rollback":
        assert view.extensions_left == 0
        assert view.when_time_runs_out == (
            "still short at the next check: rolled back, nothing serves then"
        )
    else:
        assert expected in view.when_time_runs_out


def test_explain_pass_after_an_unreadable_check() -> None:
    h = bake("pass")
    h.send(served(h, requests=None))
    view = first_model_bake(h.active, h.policy)
    assert view is not None and view.requests is None
    assert "could not be read (1 check(s)" in view.summary
    assert "it completes if the candidate served no errors" in view.when_time_runs_out


def test_explain_rollback_counts_the_extensions_left() -> None:
    h = bake("rollback", canary={"steps": [10], "bake": "45m", "max_extensions": 3})
    h.send(served(h, requests=1))
    view = first_model_bake(h.active, h.policy)
    assert view is not None and view.extensions_left == 2
    assert "extended by 45m (2 of 3 extension(s) left)" in view.when_time_runs_out


def test_explain_says_nothing_outside_a_first_model_bake() -> None:
    h = Harness(make_policy(), with_champion())
    h.start()
    assert first_model_bake(h.active, h.policy) is None  # deploying, with a champion
    h = bake("hold")
    h.send(StartPromotion(candidate_version="3"))  # queued behind it: no change
    assert first_model_bake(h.active, h.policy) is not None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (45, "45s"),
        (1800, "30m"),
        (3600, "1h"),
        (5400, "1h30m"),
        (90000, "1d1h"),
        (90, "1m30s"),
        (0, "0s"),
    ],
)
def test_durations_read_as_in_a_policy(seconds: int, text: str) -> None:
    assert duration_text(timedelta(seconds=seconds)) == text
