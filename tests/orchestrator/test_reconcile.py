"""The reconcile pass on in-memory fakes: the endpoint changed behind the app's back is seen
within one timer pass, audited and published, then repaired (no promotion) or the promotion
paused (during one), per the policy's `on_drift`."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.messages import Envelope
from orchestrator.ports import EndpointError, InvalidTraffic
from promotion.commands import ResumePromotion, RollbackRequested
from tests.fakes import (
    FakeDeployment,
    FakeWorld,
    fake_runtime,
    message,
    policy_yaml,
    start_promotion,
)
from tests.harness import signed

CANARY = "{steps: [25, 50], bake: 5m, min_samples_per_arm: 5}"


def canary_world(on_drift: str | None = None) -> FakeWorld:
    sections = {"canary": CANARY} | ({"on_drift": on_drift} if on_drift else {})
    w = fake_runtime(policy_yaml("churn", **sections))
    w.seed_champion("churn", "1")
    return w


def in_canary(w: FakeWorld) -> None:
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "canary")  # type: ignore[union-attr]
    assert w.endpoint.live == {"churn-v1": 75, "churn-v2": 25}


def resume(w: FakeWorld) -> Envelope:
    active = w.aggregate("churn").promotion.active
    assert active is not None
    command = ResumePromotion(promotion_id=active.id, requested_by="oncall@contoso.com")
    envelope = message("ResumePromotion", "churn", command, message_id=f"resume:{active.id}")
    return signed(w.runtime, envelope, "oncall@contoso.com", roles=["Promotion.Operate"])


def test_an_endpoint_serving_what_the_state_says_changes_nothing():
    w = canary_world()
    version = w.aggregate("churn").version
    report = w.runtime.maintenance.sweep()
    assert report["drift"] == [] and report["failed"] == []
    assert w.aggregate("churn").version == version
    assert w.audit.actions("churn") == []


def test_traffic_changed_by_hand_outside_a_promotion_is_put_back_in_one_pass():
    w = canary_world()
    w.endpoint.deployed["churn-v9"] = FakeDeployment("churn", "9", "succeeded")
    w.endpoint.live = {"churn-v1": 50, "churn-v9": 50}  # someone in the portal

    [drift] = w.runtime.maintenance.sweep()["drift"]
    assert drift["model"] == "churn" and "churn-v9" in drift["summary"]
    assert w.endpoint.live == {"churn-v1": 100}
    assert w.audit.actions("churn") == ["endpoint.drift", "endpoint.repair"]
    [event] = w.events.of_type("endpoint.drift")
    assert event["actual_traffic"] == {"churn-v1": 50, "churn-v9": 50}
    assert event["expected_traffic"] == {"churn-v1": 100} and event["on_drift"] == "repair"
    assert w.aggregate("churn").promotion.drift is not None

    # The next pass finds it in line: the drift is cleared, once.
    assert w.runtime.maintenance.sweep()["drift"] == []
    assert w.aggregate("churn").promotion.drift is None
    assert w.audit.actions("churn")[-1] == "endpoint.drift_resolved"
    w.runtime.maintenance.sweep()
    assert w.audit.actions("churn").count("endpoint.drift_resolved") == 1


def test_a_serving_deployment_deleted_outside_the_app_is_deployed_again():
    w = canary_world()
    del w.endpoint.deployed["churn-v1"]
    w.endpoint.live = {}

    w.runtime.maintenance.sweep()  # seen: redeployed (traffic waits until it is ready)
    assert w.endpoint.creations == {"churn-v1": 1}
    assert w.audit.actions("churn") == ["endpoint.drift", "endpoint.repair"]
    [drift] = w.events.of_type("endpoint.drift")
    assert drift["missing"] == ["churn-v1"]
    for _ in range(3):  # creating, then ready: its traffic is set, then the drift clears
        w.runtime.maintenance.sweep()
    assert w.endpoint.live == {"churn-v1": 100} and w.endpoint.violations == []
    assert w.aggregate("churn").promotion.drift is None


def test_drift_during_a_canary_pauses_it_until_a_person_resumes_and_the_split_is_restored():
    w = canary_world()
    in_canary(w)
    w.endpoint.live = {"churn-v1": 100}  # the canary taken out by hand

    w.runtime.maintenance.sweep()
    active = w.aggregate("churn").promotion.active
    assert active is not None and active.paused and active.paused_by == "reconcile"
    assert "endpoint drift" in active.pause_reason
    assert w.endpoint.live == {"churn-v1": 100}  # not touched: a person decides
    assert w.audit.actions("churn")[-2:] == ["endpoint.drift", "promotion.paused"]
    # Held: the gate check due meanwhile judges nothing; a second pass reports nothing new.
    w.run(horizon=timedelta(minutes=10))
    w.runtime.maintenance.sweep()
    assert w.audit.actions("churn").count("endpoint.drift") == 1
    assert w.aggregate("churn").promotion.active.status == "canary"  # type: ignore[union-attr]

    w.handle(resume(w))
    assert w.endpoint.live == {"churn-v1": 75, "churn-v2": 25}
    w.runtime.maintenance.sweep()
    assert w.aggregate("churn").promotion.drift is None


def test_on_drift_repair_puts_a_canary_split_back_without_pausing():
    w = canary_world(on_drift="repair")
    in_canary(w)
    w.endpoint.live = {"churn-v1": 100}
    w.runtime.maintenance.sweep()
    active = w.aggregate("churn").promotion.active
    assert active is not None and not active.paused
    assert w.endpoint.live == {"churn-v1": 75, "churn-v2": 25}


def test_on_drift_pause_outside_a_promotion_reports_once_and_touches_nothing():
    w = canary_world(on_drift="pause")
    w.endpoint.deployed["churn-v9"] = FakeDeployment("churn", "9", "succeeded")
    w.endpoint.live = {"churn-v9": 100}
    for _ in range(3):
        w.runtime.maintenance.sweep()
    assert w.endpoint.live == {"churn-v9": 100}
    assert w.audit.actions("churn") == ["endpoint.drift"]
    assert len(w.events.of_type("endpoint.drift")) == 1


def test_the_endpoints_own_change_in_flight_is_not_drift():
    w = canary_world()
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "deploying")  # type: ignore[union-attr]
    w.endpoint.faults.fail_always("set_traffic", RuntimeError("endpoint down"))
    w.endpoint.live = {"churn-v1": 100}
    with pytest.raises(RuntimeError, match="endpoint down"):
        w.run(until=lambda: w.aggregate("churn").promotion.active.status == "canary")  # type: ignore[union-attr]
    assert [item.effect.kind for item in w.aggregate("churn").outbox] == ["set_traffic"]
    report = w.runtime.maintenance.sweep()  # the split is being retried: not drift
    assert report["drift"] == [] and w.audit.actions("churn").count("endpoint.drift") == 0


def test_a_stale_split_that_lands_after_a_rollback_is_undone_and_the_candidate_removed():
    """The race the outbox cannot close alone: a stale 75/25 applied just after the rollback's
    100/0. The delete waits (the candidate still takes traffic); the pass puts the state's
    traffic back, and the next sweep removes the candidate."""
    w = canary_world()
    in_canary(w)
    w.endpoint.faults.fail(
        "delete", EndpointError("churn-v2 takes 25% of the traffic", transient=True)
    )
    active = w.aggregate("churn").promotion.active
    assert active is not None
    rollback = message(
        "RollbackRequested",
        "churn",
        RollbackRequested(promotion_id=active.id, requested_by="oncall@contoso.com", reason="x"),
        message_id="rollback:1",
    )
    with pytest.raises(EndpointError):  # saved; the delete is retried
        w.handle(signed(w.runtime, rollback, "oncall@contoso.com", roles=["Promotion.Operate"]))
    w.endpoint.live = {"churn-v1": 75, "churn-v2": 25}  # the stale split lands late
    assert [item.effect.kind for item in w.aggregate("churn").outbox] == ["delete_deployment"]

    [drift] = w.runtime.maintenance.sweep()["drift"]
    assert "churn-v2" in drift["summary"]
    assert w.endpoint.live == {"churn-v1": 100}
    w.runtime.maintenance.sweep()
    assert set(w.endpoint.deployed) == {"churn-v1"} and w.aggregate("churn").outbox == []


# --------------------------------------------------------------------------- overdue checks


def test_a_gate_check_lost_in_a_crashed_lease_is_sent_again_by_the_next_sweep():
    """The process handling the canary's gate check died; the message would come back only
    after its lease. The sweep sends it again (same check id, a new message id); the original
    arriving later is stale and changes nothing."""
    w = canary_world()
    in_canary(w)
    [lost] = [item for item in w.bus.pending if item.envelope.type == "GateCheck"]
    lost.delivered = True  # taken by the process that crashed
    w.metrics.requests = 500
    due = w.aggregate("churn").promotion.active.check_due_at  # type: ignore[union-attr]
    assert due is not None

    w.clock.advance_to(due + timedelta(seconds=30))  # within OVERDUE_CHECK_SECONDS: wait
    assert w.runtime.maintenance.sweep()["resent_checks"] == []
    w.clock.advance_to(due + timedelta(seconds=61))
    [resent] = w.runtime.maintenance.sweep()["resent_checks"]
    assert resent.startswith(lost.envelope.message_id + ":resent:")
    [(_, outcome)] = [(e, o) for e, o in w.deliver_due() if e.type == "GateCheck"]
    assert outcome.status == "applied"
    assert w.endpoint.live == {"churn-v1": 50, "churn-v2": 50}  # the next step

    late = w.handle(lost.envelope)  # the lease expires: the original comes back
    assert late.status == "ignored" and w.endpoint.live == {"churn-v1": 50, "churn-v2": 50}


APPROVAL = "{required: true, approvers: [lead@contoso.com], timeout: 1h, on_timeout: reject}"


def test_an_approval_timeout_lost_in_a_crashed_lease_is_sent_again_by_the_next_sweep():
    """Nobody answered the approval, and the process taking its timeout died: without the
    sweep the promotion would wait out the lease first. The sweep sends the timeout again
    once it is overdue (same timeout id); the policy's on_timeout applies once, and the
    original, arriving after its lease, is stale."""
    w = fake_runtime(policy_yaml("churn", canary=CANARY, approval=APPROVAL))
    w.seed_champion("churn", "1")
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "awaiting_approval")  # type: ignore[union-attr]
    [lost] = [item for item in w.bus.pending if item.envelope.type == "ApprovalTimedOut"]
    lost.delivered = True  # taken by the process that crashed
    due = w.aggregate("churn").promotion.active.check_due_at  # type: ignore[union-attr]
    assert due is not None

    w.clock.advance_to(due + timedelta(seconds=30))  # within OVERDUE_CHECK_SECONDS: wait
    assert w.runtime.maintenance.sweep()["resent_checks"] == []
    w.clock.advance_to(due + timedelta(seconds=61))
    [resent] = w.runtime.maintenance.sweep()["resent_checks"]
    assert resent.startswith(lost.envelope.message_id + ":resent:")
    [(again, outcome)] = [(e, o) for e, o in w.deliver_due() if e.type == "ApprovalTimedOut"]
    assert again.payload == lost.envelope.payload and outcome.status == "applied"
    promotion = w.aggregate("churn").promotion
    assert promotion.active is None
    [entry] = promotion.history
    assert str(entry.outcome) == "rejected" and "approval timed out" in entry.reason
    assert w.runtime.maintenance.sweep()["resent_checks"] == []  # nothing is overdue now

    late = w.handle(lost.envelope)  # the lease expires: the original comes back
    assert late.status == "ignored" and list(w.aggregate("churn").promotion.history) == [entry]


def rollback_of(w: FakeWorld) -> Envelope:
    active = w.aggregate("churn").promotion.active
    assert active is not None
    command = RollbackRequested(
        promotion_id=active.id, requested_by="oncall@contoso.com", reason="looks wrong"
    )
    envelope = message("RollbackRequested", "churn", command, message_id=f"rb:{active.id}")
    return signed(w.runtime, envelope, "oncall@contoso.com", roles=["Promotion.Operate"])


def test_a_rollback_to_a_known_good_deployment_deleted_by_hand_deploys_it_again():
    w = canary_world(on_drift="repair")
    in_canary(w)
    w.metrics.requests = 500
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "production_bake")  # type: ignore[union-attr]
    # The bake holds 5 % back on v1 (policy production_holdback): reconcile agrees.
    assert w.endpoint.live == {"churn-v2": 95, "churn-v1": 5}
    w.runtime.maintenance.sweep()
    assert w.aggregate("churn").promotion.drift is None
    del w.endpoint.deployed["churn-v1"]  # the rollback target, the holdback, removed by hand

    with pytest.raises(InvalidTraffic):  # v1 is being created: its traffic waits
        w.handle(rollback_of(w))
    assert w.endpoint.creations["churn-v1"] == 1
    for _ in range(3):
        w.endpoint.deployment_state("churn-v1")  # time passes: the endpoint finishes it
        w.runtime.maintenance.sweep()
    assert w.endpoint.live == {"churn-v1": 100} and set(w.endpoint.deployed) == {"churn-v1"}
    assert w.aggregate("churn").outbox == []


def test_a_bake_whose_holdback_is_taken_away_is_drift():
    w = canary_world()
    in_canary(w)
    w.metrics.requests = 500
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "production_bake")  # type: ignore[union-attr]
    w.endpoint.live = {"churn-v2": 100}  # someone sends everything to the candidate
    w.runtime.maintenance.sweep()
    promotion = w.aggregate("churn").promotion
    assert promotion.drift is not None
    assert promotion.drift.expected_traffic == {"churn-v2": 95, "churn-v1": 5}
    assert promotion.active is not None and promotion.active.paused  # on_drift: pause


def test_a_drift_pause_resumed_then_found_again_pauses_again():
    w = canary_world()
    in_canary(w)
    w.endpoint.live = {"churn-v1": 100}
    w.runtime.maintenance.sweep()
    w.handle(resume(w))
    assert w.aggregate("churn").promotion.drift is None
    w.endpoint.live = {"churn-v1": 100}  # taken out again before the next pass
    w.runtime.maintenance.sweep()
    active = w.aggregate("churn").promotion.active
    assert active is not None and active.paused
    assert w.audit.actions("churn").count("endpoint.drift") == 2


def test_a_repair_that_does_not_hold_is_given_up_after_three_and_pages_once():
    w = canary_world()
    w.endpoint.failing_versions.add("1")
    w.endpoint.deployed["churn-v1"].state = "failed"  # crash-looping
    w.endpoint.live = {}
    for _ in range(12):
        w.runtime.maintenance.sweep()
    actions = w.audit.actions("churn")
    assert actions.count("endpoint.repair") == 3
    assert actions.count("endpoint.repair_given_up") == 1
    assert w.endpoint.creations["churn-v1"] == 3
    assert len(w.events.of_type("endpoint.repair_given_up")) == 1
