"""Azure ML run status events on the data-events hub: a training run is checked as soon as
its event arrives, through the real trigger and handlers on the in-memory fakes; malformed
events are dead-lettered with the reason, stale and foreign ones skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from orchestrator.bootstrap import set_runtime
from retrain.job_events import JOB_EVENT
from retrain.state import RunRecord
from tests.fakes import FakeWorld, fake_runtime, landed
from tests.harness import policy_yaml
from triggers import data
from triggers.payloads import (
    RUN_COMPLETED,
    RUN_STATUS_CHANGED,
    BadPayload,
    parse_event,
    parse_run_event,
    run_event_commands,
)

EXPERIMENT_ID = "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1"


def run_event(
    run_id: str,
    status: str | None = "Completed",
    *,
    event_id: str = "evt-1",
    experiment: str = "churn-retrain",
    event_type: str = RUN_STATUS_CHANGED,
    **data_fields: Any,
) -> dict[str, Any]:
    """An event as the workspace's system topic sends it (Event Grid schema)."""
    payload: dict[str, Any] = {
        "experimentId": EXPERIMENT_ID,
        "experimentName": experiment,
        "runId": run_id,
        "runType": "azureml.PipelineRun",
        "runTags": {"retrain_run_id": run_id},
        "runProperties": {},
    }
    if status is not None:
        payload["runStatus"] = status
    return {
        "id": event_id,
        "topic": "/subscriptions/s/resourceGroups/rg/providers/"
        "Microsoft.MachineLearningServices/workspaces/ws",
        "subject": f"experiments/{EXPERIMENT_ID}/runs/{run_id}",
        "eventType": event_type,
        "eventTime": "2026-12-02T09:00:00Z",
        "data": payload | data_fields,
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def hub(*documents: Any, raw: bytes | None = None) -> func.EventHubEvent:
    body = raw if raw is not None else json.dumps(list(documents)).encode()
    return func.EventHubEvent(body=body, sequence_number=7, partition_key="p")


@pytest.fixture
def w() -> Iterator[FakeWorld]:
    world = fake_runtime(
        [policy_yaml("churn"), policy_yaml("fraud")],
    )
    set_runtime(world.runtime)
    yield world
    set_runtime(None)


def submitted(w: FakeWorld) -> str:
    """Data lands and its window closes: one job submitted; its first poll is a minute away."""
    w.handle(landed("churn", 1))
    w.run(until=lambda: bool(w.training.submissions))
    [request] = w.training.submissions
    return request.run_id


def deliver(*events: func.EventHubEvent) -> None:
    data.data_events._function.get_user_function()(list(events))


# -------------------------------------------------------------------------- the flow


def test_a_completed_event_ends_the_run_at_once_and_starts_the_promotion(w: FakeWorld) -> None:
    run_id = submitted(w)
    [check_at] = w.bus.scheduled_for(f"{run_id}:check:1")
    w.training.finish(run_id, "7")

    deliver(hub(run_event(run_id)))

    tracker = w.aggregate("churn").retrain
    assert tracker.current_job is None
    assert (tracker.runs[-1].status, tracker.runs[-1].registered_version) == ("completed", "7")
    assert w.clock() < check_at  # before the poll was due
    [start] = w.bus.envelopes("StartPromotion")
    assert start.payload["candidate_version"] == "7"
    [record] = [r for r in w.audit.read("churn") if r.action == "retrain.job_completed"]
    assert record.cause_type == JOB_EVENT
    # The poll that was scheduled still comes, and finds the run ended: nothing more.
    tracker = w.aggregate("churn").retrain
    w.clock.advance_to(check_at)
    [(_, outcome)] = [pair for pair in w.deliver_due() if pair[0].type == "TrainingJobCheck"]
    assert outcome.status == "ignored" and "stale" in (outcome.reason or "")
    assert w.aggregate("churn").retrain == tracker
    assert w.dead_letters.records == []


def test_the_same_event_again_and_a_second_kind_for_the_same_run_change_nothing(
    w: FakeWorld,
) -> None:
    run_id = submitted(w)
    w.training.finish(run_id, "7")
    deliver(hub(run_event(run_id)))
    version = w.aggregate("churn").version

    deliver(hub(run_event(run_id)))  # Event Grid / Event Hubs redelivery
    deliver(hub(run_event(run_id, None, event_id="evt-2", event_type=RUN_COMPLETED)))

    assert w.aggregate("churn").version == version
    assert len(w.bus.envelopes("StartPromotion")) == 1
    assert w.dead_letters.records == []


def test_an_event_ahead_of_the_backend_or_not_final_leaves_the_poll_in_charge(
    w: FakeWorld,
) -> None:
    run_id = submitted(w)
    w.training.start(run_id)
    version = w.aggregate("churn").version
    reads = w.training.status_reads[run_id]

    deliver(hub(run_event(run_id, "Running", event_id="evt-r")))  # not final: no read
    assert w.training.status_reads[run_id] == reads
    deliver(hub(run_event(run_id, "Completed", event_id="evt-c")))  # the backend says running
    assert w.training.status_reads[run_id] == reads + 1

    assert w.aggregate("churn").version == version  # nothing written, the poll stays
    assert w.aggregate("churn").retrain.current_job is not None
    w.training.finish(run_id, "8")
    w.run(until=lambda: w.aggregate("churn").retrain.current_job is None)
    assert w.aggregate("churn").retrain.runs[-1].registered_version == "8"


def test_a_late_running_event_after_the_end_and_an_unknown_run_are_skipped(w: FakeWorld) -> None:
    run_id = submitted(w)
    w.training.finish(run_id, "7")
    deliver(hub(run_event(run_id)))
    version = w.aggregate("churn").version

    deliver(
        hub(
            run_event(run_id, "Running", event_id="late"),  # reordered: arrives after the end
            run_event("churn-someone-elses-run", event_id="other"),
            run_event(f"{run_id}_step", event_id="child"),  # a pipeline step's own run
            run_event("x-1", experiment="not-a-model-experiment", event_id="foreign"),
        )
    )
    assert w.aggregate("churn").version == version
    assert w.training.status_reads["churn-someone-elses-run"] == 0
    assert w.dead_letters.records == []


def test_a_failed_event_fails_the_run_with_the_backend_s_error(w: FakeWorld) -> None:
    run_id = submitted(w)
    w.training.fail(run_id, "train step exited with code 1")
    deliver(hub(run_event(run_id, "Failed")))
    run = w.aggregate("churn").retrain.runs[-1]
    assert (run.status, run.error) == ("failed", "train step exited with code 1")
    assert w.bus.envelopes("StartPromotion") == []


def test_data_and_run_events_share_the_hub(w: FakeWorld) -> None:
    run_id = submitted(w)
    w.training.finish(run_id, "7")
    ready = {
        "model": "fraud",
        "data_uri": "https://acct.blob.core.windows.net/training-data/fraud/a.csv",
        "event_id": "producer-1",
    }
    deliver(hub(run_event(run_id)), hub(ready))
    assert w.aggregate("churn").retrain.current_job is None
    assert w.runtime.ports.ledger.pending("fraud").items == 1
    assert w.dead_letters.records == []


def test_a_backend_that_cannot_answer_loses_only_time(w: FakeWorld) -> None:
    from orchestrator.ports import TrainingBackendError

    run_id = submitted(w)
    w.training.finish(run_id, "7")
    w.training.faults.fail("status", TrainingBackendError("503", transient=True))
    deliver(hub(run_event(run_id)))  # logged; the batch is not held for a hint
    assert w.aggregate("churn").retrain.current_job is not None
    assert w.dead_letters.records == []
    w.run(until=lambda: w.aggregate("churn").retrain.current_job is None)  # the poll
    assert w.aggregate("churn").retrain.runs[-1].status == "completed"


# -------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (run_event("r1", None), "data.runStatus: required"),
        (run_event("r1", runId=""), "data.runId"),
        (run_event("r1", runId=12), "data.runId"),
        (run_event("r1", experimentName=None), "data.experimentName"),
        (run_event("r1") | {"subject": "experiments/e/runs/r2"}, "is not run 'r1'"),
        (run_event("r1") | {"id": ""}, "id"),
        ({k: v for k, v in run_event("r1").items() if k != "data"}, "data"),
        (run_event("r1", runStatus=3), "data.runStatus"),
    ],
)
def test_a_malformed_run_event_is_refused_naming_the_field(
    document: dict[str, Any], reason: str
) -> None:
    with pytest.raises(BadPayload, match=reason):
        parse_run_event(document)


def test_a_malformed_run_event_on_the_hub_is_dead_lettered_whole(w: FakeWorld) -> None:
    run_id = submitted(w)
    w.training.finish(run_id, "7")
    broken = run_event(run_id, None)
    deliver(hub(broken, {"model": "fraud", "data_uri": "x", "event_id": "e"}))
    [record] = w.dead_letters.records
    assert record["source"] == "eventhub"
    assert "data.runStatus" in record["reason"]
    assert record["properties"]["sequence_number"] == 7
    assert w.aggregate("churn").retrain.current_job is not None  # the poll still ends it


def test_an_event_type_that_is_not_a_string_is_dead_lettered_and_the_batch_goes_on(
    w: FakeWorld,
) -> None:
    ready = {
        "model": "fraud",
        "data_uri": "https://acct.blob.core.windows.net/training-data/fraud/a.csv",
        "event_id": "producer-1",
    }
    deliver(hub({"eventType": ["Microsoft.Storage.BlobCreated"]}), hub(ready))
    [record] = w.dead_letters.records
    assert record["source"] == "eventhub"
    assert w.runtime.ports.ledger.pending("fraud").items == 1


def test_a_long_model_name_and_a_long_run_id_still_make_one_bounded_message() -> None:
    model = "m" * 48  # the longest a policy allows
    world = fake_runtime([policy_yaml(model).replace(f"{model}-ep", "long-ep")])
    set_runtime(world.runtime)
    try:
        world.handle(landed(model, 1))
        world.run(until=lambda: bool(world.training.submissions))
        [request] = world.training.submissions
        world.training.finish(request.run_id, "7")
        event_id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"  # a GUID, as Event Grid's
        event = run_event(request.run_id, event_id=event_id, experiment=f"{model}-retrain")
        deliver(hub(event))
        assert world.aggregate(model).retrain.current_job is None  # ended by the event
        assert world.dead_letters.records == []
    finally:
        set_runtime(None)


def test_the_data_parser_takes_no_data_from_a_run_event() -> None:
    policies = fake_runtime(policy_yaml("churn")).policies
    assert parse_event(json.dumps(run_event("r1")).encode(), policies) == []


def test_a_run_event_goes_to_every_model_training_under_its_experiment() -> None:
    w = fake_runtime(
        [
            policy_yaml("churn", pipeline="{experiment: shared}"),
            policy_yaml("fraud", pipeline="{experiment: shared}"),
            policy_yaml("other"),
        ]
    )
    event = parse_run_event(run_event("r1", experiment="shared"))
    commands = run_event_commands(event, w.policies)
    assert sorted(model for model, _ in commands) == ["churn", "fraud"]
    assert {(c.run_id, c.run_status, c.event_id) for _, c in commands} == {
        ("r1", "Completed", "evt-1")
    }
    completed = parse_run_event(
        run_event("r2", None, event_type=RUN_COMPLETED, experiment="shared")
    )
    assert {c.run_status for _, c in run_event_commands(completed, w.policies)} == {"Completed"}


def test_a_job_event_needs_no_mac_yet_never_ends_a_run_by_itself(w: FakeWorld) -> None:
    """Anyone who can put a message on the queue can send TrainingJobEvent: it only makes
    the handler read the backend, which still says the job runs."""
    from orchestrator.messages import Envelope
    from retrain.job_events import TrainingJobEvent

    run_id = submitted(w)
    w.training.start(run_id)
    forged = TrainingJobEvent(run_id=run_id, run_status="Completed", event_id="forged")
    outcome = w.handle(Envelope.new(JOB_EVENT, "churn", forged, message_id="forged"))
    assert outcome.status == "ignored" and "still reports running" in (outcome.reason or "")
    assert w.aggregate("churn").retrain.current_job is not None


def test_no_queue_takes_a_job_event_only_the_event_trigger_makes_it(w: FakeWorld) -> None:
    from orchestrator.messages import Envelope
    from retrain.job_events import TrainingJobEvent
    from triggers import messages

    run_id = submitted(w)
    w.training.finish(run_id, "7")
    sent = TrainingJobEvent(run_id=run_id, run_status="Completed", event_id="queued")
    body = Envelope.new(JOB_EVENT, "churn", sent, message_id="queued").to_bytes()
    messages.orchestrator_queue._function.get_user_function()(func.ServiceBusMessage(body=body))
    [record] = w.dead_letters.records
    assert "TrainingJobEvent is not accepted on the orchestrator queue" in record["reason"]
    assert w.aggregate("churn").retrain.current_job is not None


# -------------------------------------------------------------------------- model monitor breach

BREACH = "has failed due to one or more features violating metric thresholds"


def monitored_world() -> FakeWorld:
    """churn listens to its Azure ML model monitor (experiment churn-monitor); v3 serves."""
    monitor = (
        "{window: 1h, min_samples: 500, accuracy_drop: 0.03, cooldown: 6h, every: 10m, "
        "azureml_monitor_experiment: churn-monitor}"
    )
    world = fake_runtime([policy_yaml("churn", monitor=monitor), policy_yaml("fraud")])
    world.seed_champion("churn", "3")
    last = RunRecord(
        run_id="churn-run-1",
        status="completed",
        registered_version="3",
        data_count=1,
        data_sample=["https://acct.blob.core.windows.net/training-data/churn/a.csv"],
    )

    def with_history(aggregate: Any) -> Any:
        return aggregate.model_copy(
            update={"retrain": aggregate.retrain.model_copy(update={"runs": [last]})}
        )

    world.store.seed("churn", with_history)
    return world


def breach_event(event_id: str, experiment: str = "churn-monitor", **tags: Any) -> dict:
    run_tags = tags or {"azureml_modelmonitor_threshold_breached": BREACH}
    return run_event(
        f"monitor-run-{event_id}", "Failed", event_id=event_id, experiment=experiment,
        runTags=run_tags,
    )  # fmt: skip


def test_a_model_monitor_breach_starts_one_decay_retrain_within_the_cooldown() -> None:
    world = monitored_world()
    set_runtime(world.runtime)
    try:
        deliver(hub(breach_event("b-1")))
        [request] = world.training.submissions
        assert request.run_id.startswith("churn-decay-")
        decay = next(r for r in world.audit.read("churn") if r.action == "monitor.decay_detected")
        assert decay.actor == "azureml-model-monitor" and BREACH in decay.detail["reason"]
        # The monitor's next run breaches again an hour later: within the 6 h cooldown.
        world.clock.advance(3600)
        deliver(hub(breach_event("b-2")))
        assert len(world.training.submissions) == 1
        assert world.dead_letters.records == []
    finally:
        set_runtime(None)


def test_a_monitor_run_without_a_breach_or_for_no_listening_model_starts_nothing() -> None:
    world = monitored_world()
    set_runtime(world.runtime)
    try:
        deliver(hub(breach_event("n-1", experiment="someone-elses-monitor")))
        deliver(hub(breach_event("n-2", note="the run failed for another reason")))
        deliver(hub(breach_event("n-3", azureml_modelmonitor_threshold_breached="   ")))
        assert world.training.submissions == []
        assert world.dead_letters.records == []
    finally:
        set_runtime(None)
