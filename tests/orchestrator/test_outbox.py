"""The outbox on in-memory fakes: effects run in order after the write, transient failures are
counted and retried, a submit or a deployment gives up only after MAX_EFFECT_ATTEMPTS
dispatches AND EFFECT_RETRY_SECONDS since the first failure, a busy endpoint keeps its delete
without blocking what follows, and a re-dispatch repeats nothing harmful."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.effects import (
    DeleteDeployment,
    DeployModel,
    Effect,
    PublishEvent,
    SendMessage,
    SetTraffic,
    SubmitTrainingJob,
    TagModelVersion,
)
from orchestrator.aggregate import ModelAggregate, OutboxItem
from orchestrator.ports import EndpointError, InvalidTraffic, TrainingBackendError
from tests import telemetry
from tests.fakes import (
    START,
    FakeWorld,
    fake_runtime,
    fake_settings,
    landed,
    policy_yaml,
    start_promotion,
)

BUSY = TrainingBackendError("submitting: Azure ML answered 503: busy", transient=True)


def with_outbox(w: FakeWorld, *effects: Effect, model: str = "churn") -> list[OutboxItem]:
    """Arrange: these effects wait in the model's outbox (as a crash after the save leaves
    them)."""
    items = [OutboxItem(id=f"1-{index}", effect=effect) for index, effect in enumerate(effects)]

    def change(aggregate: ModelAggregate) -> ModelAggregate:
        return aggregate.model_copy(update={"outbox": [*aggregate.outbox, *items]})

    w.store.seed(model, change)
    return items


def outbox(w: FakeWorld, model: str = "churn") -> list[OutboxItem]:
    return w.aggregate(model).outbox


# --------------------------------------------------------------------------- giving up


def test_a_submit_failing_past_the_attempts_and_the_window_fails_its_run_and_queues_a_cancel():
    w = fake_runtime(settings=fake_settings(MAX_EFFECT_ATTEMPTS="2", EFFECT_RETRY_SECONDS="600"))
    w.training.faults.fail_always("submit", BUSY)
    w.handle(landed("churn", 1, 2))
    w.clock.advance(1)
    [close] = w.bus.due(w.clock())
    first_failure = w.clock()
    run_id = None
    # The transport redelivers at once, then later: more dispatches than MAX_EFFECT_ATTEMPTS,
    # all inside the window, so each one raises (the message is retried).
    for minutes in (0, 0, 9):
        w.clock.advance_to(first_failure + timedelta(minutes=minutes))
        with pytest.raises(TrainingBackendError, match="503"):
            w.handle(close)
        submit = outbox(w)[0]
        assert submit.effect.kind == "submit_training_job"
        run_id = submit.effect.run_id  # type: ignore[union-attr]
    assert (submit.failed_attempts, submit.first_failed_at) == (3, first_failure)
    assert w.aggregate("churn").retrain.current_job is not None
    assert w.bus.envelopes("TrainingJobStatus") == []

    # Ten minutes after the first failure: the fourth dispatch gives up, without raising.
    w.clock.advance_to(first_failure + timedelta(minutes=10))
    assert w.handle(close).status == "duplicate"
    assert w.training.faults.raised["submit"] == 4
    [status] = w.bus.envelopes("TrainingJobStatus")
    assert status.message_id == f"{run_id}:submit-failed"
    assert status.payload["state"] == "failed" and status.payload["run_id"] == run_id
    assert status.payload["error"].startswith("gave up after 4 attempts in 600 s: ")
    assert "Azure ML answered 503: busy" in status.payload["error"]
    # The service may have created the job unheard of: a cancel waits in the outbox.
    [cancel] = outbox(w)
    assert (cancel.effect.kind, cancel.effect.run_id) == ("cancel_training_job", run_id)  # type: ignore[union-attr]

    # The failed status ends the run; its dispatch sends the cancel; the late check is stale.
    delivered = w.deliver_due()
    assert [(env.type, out.status) for env, out in delivered] == [
        ("TrainingJobStatus", "applied"),
        ("TrainingJobCheck", "ignored"),
    ]
    assert w.training.cancellations == [run_id]
    assert w.training.status_reads == {}
    aggregate = w.aggregate("churn")
    assert aggregate.outbox == []
    assert aggregate.retrain.current_job is None
    [run] = aggregate.retrain.runs
    assert (run.run_id, run.status) == (run_id, "failed")
    assert run.error is not None and run.error.startswith("gave up after 4 attempts")


@pytest.mark.parametrize(
    ("failures_at_minutes", "gives_up_at"),
    [
        # Many dispatches at once: the window has not passed.
        ([0, 0, 0, 0, 0, 5, 14], 15),
        # The window passed, but not enough dispatches yet.
        ([0, 20], 21),
    ],
    ids=["attempts-but-not-the-window", "the-window-but-not-the-attempts"],
)
def test_giving_up_takes_both_the_attempts_and_the_window(
    failures_at_minutes: list[int], gives_up_at: int
):
    w = fake_runtime(settings=fake_settings(MAX_EFFECT_ATTEMPTS="3", EFFECT_RETRY_SECONDS="900"))
    w.training.faults.fail_always("submit", BUSY)
    with_outbox(
        w, SubmitTrainingJob(run_id="churn-r1", data_count=1, data_sample=["https://a/x.csv"])
    )
    for minutes in failures_at_minutes:
        w.clock.advance_to(START + timedelta(minutes=minutes))
        with pytest.raises(TrainingBackendError):
            w.runtime.outbox.dispatch("churn")
    [item] = outbox(w)
    assert item.failed_attempts == len(failures_at_minutes)
    assert item.first_failed_at == START
    w.clock.advance_to(START + timedelta(minutes=gives_up_at))
    assert w.runtime.outbox.dispatch("churn") == 1
    assert [item.effect.kind for item in outbox(w)] == ["cancel_training_job"]
    assert [env.type for env in w.bus.envelopes()] == ["TrainingJobStatus"]


def test_a_permanent_submit_refusal_fails_the_run_at_once_without_retrying():
    w = fake_runtime()
    w.training.faults.fail("submit", TrainingBackendError("quota exceeded: no compute"))
    w.handle(landed("churn", 1))
    w.clock.advance(1)
    delivered = w.deliver_due()
    assert [(env.type, out.status) for env, out in delivered] == [
        ("RetrainWindowClosed", "applied"),
        ("TrainingJobStatus", "applied"),
    ]
    [run] = w.aggregate("churn").retrain.runs
    assert (run.status, run.error) == ("failed", "quota exceeded: no compute")
    assert w.training.cancellations == []  # a refused submit created nothing


def test_a_deployment_failing_past_the_attempts_and_the_window_fails_the_promotion():
    w = fake_runtime(settings=fake_settings(MAX_EFFECT_ATTEMPTS="2", EFFECT_RETRY_SECONDS="900"))
    w.endpoint.faults.fail_always("deploy", EndpointError("Azure ML: 503", transient=True))
    start = start_promotion("churn", "1")
    with pytest.raises(EndpointError):
        w.handle(start)
    promotion = w.aggregate("churn").promotion.active
    assert promotion is not None and promotion.status == "deploying"
    # The effects before the deployment ran once and left the outbox; the deployment waits.
    [deploy] = outbox(w)
    assert (deploy.effect.kind, deploy.failed_attempts) == ("deploy_model", 1)
    assert w.events.types() == ["promotion.started"]
    assert w.registry.stages("churn", "1") == ["staging"]

    w.clock.advance(5 * 60)
    with pytest.raises(EndpointError):
        w.handle(start)  # attempts reached, but only five minutes in
    assert outbox(w)[0].failed_attempts == 2

    w.clock.advance(10 * 60)
    assert w.handle(start).status == "duplicate"
    assert outbox(w) == []
    assert w.bus.envelopes("DeploymentCheck") == []
    [failed] = w.bus.envelopes("DeploymentFailed")
    assert failed.message_id == f"{promotion.id}:churn-v1:deploy-failed"
    assert failed.payload["error"].startswith("gave up after 3 attempts in 900 s: ")

    [(envelope, outcome)] = w.deliver_due()
    assert (envelope.type, outcome.status) == ("DeploymentFailed", "applied")
    state = w.aggregate("churn").promotion
    assert state.active is None and state.champion is None
    [entry] = state.history
    assert str(entry.outcome) == "failed" and "Azure ML: 503" in entry.reason
    assert w.endpoint.deletes == ["churn-v1"]  # nothing was created; removing it is harmless
    assert w.endpoint.traffic_maps == [] and w.endpoint.violations == []
    assert w.events.types()[-1] == "promotion.failed"


def test_a_permanent_deployment_refusal_fails_the_promotion_without_retrying():
    w = fake_runtime()
    w.endpoint.faults.fail("deploy", EndpointError("model version not found"))
    assert w.handle(start_promotion("churn", "1")).status == "applied"
    assert outbox(w) == []
    [(envelope, outcome)] = w.deliver_due()
    assert (envelope.type, outcome.status) == ("DeploymentFailed", "applied")
    [entry] = w.aggregate("churn").promotion.history
    assert str(entry.outcome) == "failed" and "model version not found" in entry.reason


# --------------------------------------------------------------------------- a busy endpoint


def test_a_busy_endpoint_keeps_the_delete_in_the_outbox_and_runs_the_effects_after_it():
    w = fake_runtime()
    w.endpoint.serve("churn", "1")
    w.endpoint.serve("churn", "2")  # v2 takes the traffic, v1 is left to remove
    w.endpoint.busy_deletes = 1
    with_outbox(
        w,
        DeleteDeployment(deployment="churn-v1"),
        TagModelVersion(model_version="1", tags={"retrain.stage": "archived"}),
        PublishEvent(event_type="promotion.completed", data={"previous_version": "1"}),
    )
    assert w.runtime.outbox.dispatch("churn") == 2  # no raise: not a failure
    [kept] = outbox(w)
    assert kept.effect.kind == "delete_deployment"
    assert kept.failed_attempts == 0  # busy is not counted towards giving up
    assert w.registry.stages("churn", "1") == ["archived"]
    assert w.events.types() == ["promotion.completed"]
    assert "churn-v1" in w.endpoint.deployed

    # The endpoint's update is done: the next dispatch (the sweep's) removes it.
    assert w.runtime.maintenance.sweep()["redispatched"] == 1
    assert outbox(w) == []
    assert set(w.endpoint.deployed) == {"churn-v2"}
    assert w.events.types() == ["promotion.completed"]  # not published twice


def test_a_completed_promotion_on_a_busy_endpoint_completes_and_removes_the_old_one_later():
    w = fake_runtime(policy_yaml("churn", canary="{steps: [50], bake: 1m, min_samples_per_arm: 5}"))
    w.seed_champion("churn", "1")
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "production_bake")  # type: ignore[union-attr]
    w.endpoint.busy_deletes = 3
    delivered = w.run(until=lambda: w.aggregate("churn").promotion.active is None)
    assert [(env.type, out.status) for env, out in delivered] == [("GateCheck", "applied")]
    promotion = w.aggregate("churn").promotion
    assert promotion.champion is not None and promotion.champion.version == "2"
    assert [item.effect.kind for item in outbox(w)] == ["delete_deployment"]
    assert w.events.types()[-1] == "promotion.completed"
    assert w.registry.stages("churn", "1") == ["archived"]
    assert w.endpoint.live == {"churn-v2": 100}

    reports = [w.runtime.maintenance.sweep() for _ in range(3)]
    assert [report["redispatched"] for report in reports] == [0, 0, 1]
    assert all(report["failed"] == [] for report in reports)
    assert set(w.endpoint.deployed) == {"churn-v2"}
    assert outbox(w) == []


# --------------------------------------------------------------------------- re-dispatch


def test_a_crash_before_the_outbox_is_cleared_repeats_nothing_harmful():
    w = fake_runtime()
    w.endpoint.serve("churn", "1")
    # The arranging write goes through; the outbox's clean-up write after the effects fails.
    w.store.faults.fail("save", None, RuntimeError("process died"))
    deploy = DeployModel(model_version="2", deployment="churn-v2")
    with_outbox(
        w,
        deploy,
        SendMessage(message_type="GateCheck", message_id="p:canary-1:check:1", payload={}),
    )
    with pytest.raises(RuntimeError, match="process died"):
        w.runtime.outbox.dispatch("churn")
    assert len(outbox(w)) == 2

    assert w.runtime.maintenance.sweep()["redispatched"] == 2
    assert outbox(w) == []
    assert w.endpoint.creations == {"churn-v2": 1}  # the second deploy sent nothing
    assert w.endpoint.deploy_calls == {"churn-v2": 2}
    ids = [env.message_id for env in w.bus.envelopes()]
    # The same ids again: the receiving handler drops the repeats.
    assert ids.count("p:canary-1:check:1") == 2
    assert ids.count(":churn-v2:deploy-check:1") == 2


def test_a_traffic_map_is_absolute_and_zero_weights_are_left_out():
    """A rollback's {known good: 100, candidate: 0} still applies when re-dispatched after the
    delete that followed it removed the candidate."""
    w = fake_runtime()
    w.endpoint.serve("churn", "1")
    with_outbox(
        w,
        SetTraffic(traffic={"churn-v1": 100, "churn-v2": 0}),
        DeleteDeployment(deployment="churn-v2"),
    )
    assert w.runtime.outbox.dispatch("churn") == 2
    with_outbox(w, SetTraffic(traffic={"churn-v1": 100, "churn-v2": 0}))
    assert w.runtime.outbox.dispatch("churn") == 1
    assert w.endpoint.traffic_maps == [{"churn-v1": 100}, {"churn-v1": 100}]
    assert w.endpoint.violations == []


def test_an_effect_that_breaks_the_traffic_rules_stays_in_the_outbox_and_raises():
    w = fake_runtime()
    w.endpoint.serve("churn", "1")
    with_outbox(
        w,
        SetTraffic(traffic={"churn-v1": 50, "churn-v9": 50}),
        DeleteDeployment(deployment="churn-v1"),
        PublishEvent(event_type="x", data={}),
    )
    with pytest.raises(InvalidTraffic, match="do not exist"):
        w.runtime.outbox.dispatch("churn")
    # The endpoint's later effects wait behind it; another target's effects ran.
    assert [item.effect.kind for item in outbox(w)] == ["set_traffic", "delete_deployment"]
    assert outbox(w)[0].failed_attempts == 1
    assert w.events.types() == ["x"]
    assert w.endpoint.live == {"churn-v1": 100} and w.endpoint.deletes == []


# --------------------------------------------------------------------------- one target each


def rolled_back_canary(w: FakeWorld) -> None:
    """Arrange: v1 serves 75 %, v2 25 %; a rollback's effects wait in the outbox."""
    w.endpoint.serve("churn", "2")
    w.endpoint.serve("churn", "1")
    w.endpoint.live = {"churn-v1": 75, "churn-v2": 25}
    with_outbox(
        w,
        PublishEvent(event_type="promotion.rolled_back", data={}),
        SetTraffic(traffic={"churn-v1": 100, "churn-v2": 0}, restore=True),
        DeleteDeployment(deployment="churn-v2"),
        TagModelVersion(model_version="2", tags={"retrain.stage": "rolled_back"}),
    )


def test_a_notification_target_that_is_down_never_holds_back_a_rollback():
    w = fake_runtime()
    rolled_back_canary(w)
    w.events.faults.fail_always("publish", ConnectionError("Event Hubs unreachable"))
    assert w.runtime.outbox.dispatch("churn") == 3  # not raised: a notification can wait
    assert w.endpoint.live == {"churn-v1": 100}
    assert set(w.endpoint.deployed) == {"churn-v1"}
    assert w.registry.stages("churn", "2") == ["rolled_back"]
    [waiting] = outbox(w)
    assert (waiting.effect.kind, waiting.failed_attempts) == ("publish_event", 1)

    w.events.faults.clear()
    assert w.runtime.maintenance.sweep()["redispatched"] == 1
    assert w.events.types() == ["promotion.rolled_back"] and outbox(w) == []


def test_every_effect_kind_gives_up_audited_published_and_counted():
    telemetry.install()
    before = telemetry.counter("retrain.effects.given_up", kind="tag_model_version")
    w = fake_runtime(settings=fake_settings(MAX_EFFECT_ATTEMPTS="2", EFFECT_RETRY_SECONDS="600"))
    w.registry.faults.fail_always("tag", ConnectionError("registry down"))
    with_outbox(w, TagModelVersion(model_version="2", tags={"retrain.stage": "archived"}))
    for minutes in (0, 5):
        w.clock.advance_to(START + timedelta(minutes=minutes))
        assert w.runtime.outbox.dispatch("churn") == 0  # counted, not raised, kept
    assert outbox(w)[0].failed_attempts == 2

    w.clock.advance_to(START + timedelta(minutes=10))
    assert w.runtime.outbox.dispatch("churn") == 1
    aggregate = w.aggregate("churn")
    assert aggregate.outbox == [] and aggregate.effects_given_up == 1
    [record] = [r for r in w.audit.read("churn") if r.action == "effect.gave_up"]
    assert record.detail["effect"] == "tag_model_version" and record.detail["attempts"] == 3
    assert "registry down" in record.detail["error"]
    [event] = w.events.of_type("effect.gave_up")
    assert event["effect"] == "tag_model_version"
    assert telemetry.counter("retrain.effects.given_up", kind="tag_model_version") == before + 1


def test_a_rollback_whose_traffic_does_not_hold_pages_and_is_retried_until_it_does():
    telemetry.install()
    before = telemetry.counter("retrain.rollback.traffic_not_restored")
    w = fake_runtime(settings=fake_settings(MAX_EFFECT_ATTEMPTS="2", EFFECT_RETRY_SECONDS="600"))
    rolled_back_canary(w)
    w.endpoint.faults.fail_always("set_traffic", EndpointError("Azure ML: 503", transient=True))
    for minutes in (0, 5, 11, 30):
        w.clock.advance_to(START + timedelta(minutes=minutes))
        with pytest.raises(EndpointError):
            w.runtime.outbox.dispatch("churn")
    aggregate = w.aggregate("churn")
    # Never given up: the map and the delete behind it wait; the model pages, once.
    assert [item.effect.kind for item in aggregate.outbox] == ["set_traffic", "delete_deployment"]
    assert aggregate.effects_given_up == 0
    alert = aggregate.traffic_alert
    assert alert is not None and alert.traffic == {"churn-v1": 100, "churn-v2": 0}
    assert alert.since == START and "Azure ML: 503" in alert.error
    assert w.events.types().count("rollback.traffic_not_restored") == 1
    assert w.audit.actions("churn").count("rollback.traffic_not_restored") == 1
    assert telemetry.counter("retrain.rollback.traffic_not_restored") == before + 1
    assert w.endpoint.live == {"churn-v1": 75, "churn-v2": 25} and w.endpoint.deletes == []

    w.endpoint.faults.clear()
    assert w.runtime.maintenance.sweep()["redispatched"] == 2
    assert w.endpoint.live == {"churn-v1": 100} and set(w.endpoint.deployed) == {"churn-v1"}
    assert w.aggregate("churn").traffic_alert is None
    assert "rollback.traffic_restored" in w.events.types()
    assert "rollback.traffic_restored" in w.audit.actions("churn")


# --------------------------------------------------------------------------- the latest state


def test_a_newer_traffic_map_supersedes_an_older_one_still_waiting():
    w = fake_runtime()
    w.endpoint.serve("churn", "2")
    w.endpoint.serve("churn", "1")
    with_outbox(
        w,
        SetTraffic(traffic={"churn-v1": 75, "churn-v2": 25}),
        SetTraffic(traffic={"churn-v1": 100, "churn-v2": 0}, restore=True),
    )
    assert w.runtime.outbox.dispatch("churn") == 2
    assert w.endpoint.traffic_maps == [{"churn-v1": 100}]


def test_a_stale_copy_never_puts_an_old_split_back_after_a_rollback():
    w = fake_runtime()
    w.endpoint.serve("churn", "2")
    w.endpoint.serve("churn", "1")
    with_outbox(w, SetTraffic(traffic={"churn-v1": 75, "churn-v2": 25}))
    stale = w.aggregate("churn")  # a handler saved this and has not dispatched it yet
    # Meanwhile a rollback is saved and dispatched from its own (newer) copy.
    with_outbox(
        w,
        SetTraffic(traffic={"churn-v1": 100, "churn-v2": 0}, restore=True),
        DeleteDeployment(deployment="churn-v2"),
    )
    w.runtime.outbox.dispatch("churn", w.aggregate("churn"))
    assert w.endpoint.live == {"churn-v1": 100} and set(w.endpoint.deployed) == {"churn-v1"}

    # The first handler dispatches its stale copy late: nothing of it runs on the endpoint.
    w.runtime.outbox.dispatch("churn", stale)
    assert w.endpoint.traffic_maps == [{"churn-v1": 100}]
    assert w.endpoint.live == {"churn-v1": 100} and w.endpoint.violations == []


def test_audit_entries_are_written_even_when_an_effect_fails():
    w = fake_runtime()
    w.bus.faults.fail_always("schedule", ConnectionError("bus down"))
    with pytest.raises(ConnectionError):
        w.handle(landed("churn", 1))
    aggregate = w.aggregate("churn")
    assert aggregate.pending_audit == []
    assert len(aggregate.outbox) == 1
    assert w.audit.actions("churn") == ["retrain.data_accumulated", "retrain.window_opened"]


def test_an_audit_log_that_cannot_be_written_keeps_its_records_and_holds_back_no_effect():
    w = fake_runtime()
    w.audit.faults.fail("append", ConnectionError("storage down"))
    with pytest.raises(ConnectionError):  # raised after the effects: the message comes again
        w.handle(landed("churn", 1))
    aggregate = w.aggregate("churn")
    assert len(aggregate.pending_audit) == 2 and aggregate.outbox == []
    assert [env.type for env in w.bus.envelopes()] == ["RetrainWindowClosed"]
    assert w.runtime.maintenance.sweep()["redispatched"] == 0
    assert w.audit.actions("churn") == ["retrain.data_accumulated", "retrain.window_opened"]
    assert w.aggregate("churn").pending_audit == []


def test_an_effect_of_a_model_without_a_policy_is_dropped():
    w = fake_runtime()
    with_outbox(w, PublishEvent(event_type="x", data={}), model="retired")
    assert w.runtime.outbox.dispatch("retired") == 1
    assert outbox(w, "retired") == []
    assert w.events.events == []
