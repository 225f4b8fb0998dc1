"""The read-only queries and the timer's sweep, on in-memory fakes: the sweep re-dispatches
what a crash left in an outbox, reports stuck promotions, checks overdue training jobs, and
one failing model never stops it for the others."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from domain.effects import PublishEvent, SetTraffic
from orchestrator.aggregate import ModelAggregate, OutboxItem
from orchestrator.messages import Envelope
from orchestrator.policy_files import UnknownModel
from orchestrator.ports import AuditRecord, InvalidContinuation
from promotion.commands import ApprovalDecision
from retrain.commands import DATA_SAMPLE
from retrain.state import MAX_RUNS
from tests.fakes import (
    START,
    FakeTrainingBackend,
    FakeWorld,
    fake_runtime,
    landed,
    message,
    policy_yaml,
    start_promotion,
)
from tests.harness import signed

LEAD = "lead@contoso.com"
APPROVAL = f"{{required: true, approvers: [{LEAD}], timeout: 24h}}"


def answer(w: FakeWorld, decision: str = "approve", model: str = "churn") -> Envelope:
    active = w.aggregate(model).promotion.active
    assert active is not None
    envelope = message(
        "ApprovalDecision",
        model,
        ApprovalDecision(
            promotion_id=active.id,
            step="approval",
            candidate_version=active.candidate_version,
            decision=decision,  # type: ignore[arg-type]
            approver=LEAD,
        ),
    )
    return signed(w.runtime, envelope, LEAD)  # LEAD's token


# --------------------------------------------------------------------------- the sweep


def test_the_sweep_redispatches_an_outbox_a_crash_left_behind():
    w = fake_runtime()
    w.bus.faults.fail("schedule", ConnectionError("bus unreachable"))
    with pytest.raises(ConnectionError):
        w.handle(landed("churn", 1))
    assert len(w.aggregate("churn").outbox) == 1

    report = w.runtime.maintenance.sweep()
    assert report == {
        "redispatched": 1,
        "stuck": [],
        "failed": [],
        "overdue_jobs": [],
        "resent_checks": [],
        "releasing": [],
        "drift": [],
    }
    assert [env.type for env in w.bus.envelopes()] == ["RetrainWindowClosed"]
    assert w.aggregate("churn").outbox == []
    # Nothing left: the next sweep does nothing.
    assert w.runtime.maintenance.sweep()["redispatched"] == 0
    assert len(w.bus.sent) == 1


def test_one_model_whose_effects_keep_failing_never_stops_the_sweep_for_the_others():
    w = fake_runtime([policy_yaml("churn"), policy_yaml("fraud")])
    w.endpoint.serve("churn", "1")

    def arrange(model: str, *effects: object) -> None:
        items = [OutboxItem(id=f"1-{i}", effect=e) for i, e in enumerate(effects)]  # type: ignore[arg-type]

        def change(aggregate: ModelAggregate) -> ModelAggregate:
            return aggregate.model_copy(update={"outbox": items})

        w.store.seed(model, change)

    arrange("churn", SetTraffic(traffic={"churn-v7": 100}))  # names no deployment: refused
    arrange("fraud", PublishEvent(event_type="fraud.event", data={}))

    report = w.runtime.maintenance.sweep()
    assert report["redispatched"] == 1
    [failed] = report["failed"]
    assert failed["model"] == "churn" and failed["error"].startswith("InvalidTraffic: ")
    assert w.events.types("fraud") == ["fraud.event"]
    assert w.aggregate("fraud").outbox == []
    assert len(w.aggregate("churn").outbox) == 1  # kept for the next sweep


def test_the_sweep_reports_a_promotion_that_has_not_moved_for_max_time_in_state():
    w = fake_runtime(
        [
            policy_yaml("churn", approval=APPROVAL, max_time_in_state="2h"),
            policy_yaml("fraud", approval=APPROVAL),  # 48 h by default
        ]
    )
    w.handle(start_promotion("churn", "1"))
    w.handle(start_promotion("fraud", "1"))
    churn = w.aggregate("churn").promotion.active
    assert churn is not None and churn.status == "awaiting_approval"

    w.clock.advance(timedelta(hours=2))
    assert w.runtime.maintenance.sweep()["stuck"] == []  # not longer than 2 h yet
    w.clock.advance(1)
    report = w.runtime.maintenance.sweep()
    assert report["stuck"] == [
        {
            "model": "churn",
            "promotion_id": churn.id,
            "status": "awaiting_approval",
            "since": START.isoformat(),
        }
    ]
    assert report["failed"] == [] and report["redispatched"] == 0

    # Once it moves, it is no longer stuck.
    w.handle(answer(w, "reject"))
    assert w.runtime.maintenance.sweep()["stuck"] == []


def test_the_sweep_checks_a_training_job_past_max_job_duration_once_and_it_ends():
    retrain = "{debounce: 1s, min_new_files: 1, cooldown: 0s, max_job_duration: 2h}"
    w = fake_runtime(policy_yaml("churn", retrain=retrain))
    w.handle(landed("churn", 1))
    w.clock.advance(1)
    w.deliver_due()
    [run_id] = w.training.jobs  # stays "queued": the fake backend never moves it
    w.bus.due(w.clock() + timedelta(days=1))  # every scheduled check is lost
    sent = len(w.bus.sent)

    w.clock.advance(timedelta(hours=1))
    assert w.runtime.maintenance.sweep()["overdue_jobs"] == []
    assert len(w.bus.sent) == sent

    w.clock.advance(timedelta(hours=1))
    assert w.runtime.maintenance.sweep()["overdue_jobs"] == [run_id]
    [check] = w.bus.due(w.clock())
    assert check.type == "TrainingJobCheck"
    assert check.message_id == f"{run_id}:check:1:overdue"
    assert check.payload == {"run_id": run_id, "attempt": 1}

    assert w.handle(check).status == "applied"
    [run] = w.aggregate("churn").retrain.runs
    assert (run.run_id, run.status) == (run_id, "failed")
    assert run.error is not None and "max_job_duration" in run.error
    assert w.training.cancellations == [run_id]
    assert w.runtime.maintenance.sweep()["overdue_jobs"] == []


def test_the_sweep_of_models_without_state_or_policy_changes_nothing():
    w = fake_runtime()
    w.store.seed("retired", lambda aggregate: aggregate)  # state, but no policy any more
    report = w.runtime.maintenance.sweep()
    assert report == {
        "redispatched": 0,
        "stuck": [],
        "failed": [],
        "overdue_jobs": [],
        "resent_checks": [],
        "releasing": [],
        "drift": [],
    }
    assert w.store.saves == [] and w.bus.sent == []


# --------------------------------------------------------------------------- queries


def test_model_status_of_a_model_without_a_policy_raises_unknown_model():
    w = fake_runtime()
    with pytest.raises(UnknownModel, match="nobody"):
        w.runtime.queries.model_status("nobody")


def test_model_status_of_a_model_never_seen_is_empty():
    w = fake_runtime()
    status = w.runtime.queries.model_status("churn")
    assert status["model"] == "churn" and status["version"] == 0
    assert status["production"] is None and status["active_promotion"] is None
    assert status["queued_candidates"] == [] and status["recent_promotions"] == []
    assert status["pending_effects"] == 0
    assert status["retrain"]["current_job"] is None
    assert w.store.list_keys() == []  # a query writes nothing


def test_model_status_shows_production_the_active_promotion_the_queue_and_the_job():
    w = fake_runtime(policy_yaml("churn", approval=APPROVAL))
    w.seed_champion("churn", "1")
    w.handle(start_promotion("churn", "2"))
    w.handle(start_promotion("churn", "3"))  # queued behind v2 (on_newer_candidate: queue)
    w.handle(landed("churn", 1))
    w.clock.advance(1)
    w.deliver_due()

    status = w.runtime.queries.model_status("churn")
    aggregate = w.aggregate("churn")
    assert status["version"] == aggregate.version
    assert status["production"]["version"] == "1"
    assert status["production"]["deployment"] == "churn-v1"
    assert status["last_known_good"]["version"] == "1"
    active = status["active_promotion"]
    assert (active["candidate_version"], active["status"]) == ("2", "awaiting_approval")
    assert [q["version"] for q in status["queued_candidates"]] == ["3"]
    assert status["retrain"]["current_job"]["run_id"] == w.training.jobs[0]
    assert status["pending_effects"] == 0

    # v2 rejected: v3 starts, and its gate check (sent now) cannot reach the bus.
    w.bus.faults.fail_always("send", ConnectionError("down"))
    with pytest.raises(ConnectionError):
        w.handle(answer(w, "reject"))
    status = w.runtime.queries.model_status("churn")
    assert status["active_promotion"]["candidate_version"] == "3"
    assert status["queued_candidates"] == []
    assert [h["outcome"] for h in status["recent_promotions"]] == ["rejected"]
    pending = w.aggregate("churn").outbox
    assert status["pending_effects"] == len(pending) >= 1
    assert pending[0].effect.kind == "send_message"
    w.bus.faults.clear()
    w.runtime.maintenance.sweep()
    assert w.runtime.queries.model_status("churn")["pending_effects"] == 0


def test_find_promotion_finds_an_active_or_a_finished_promotion_of_any_model():
    w = fake_runtime(
        [policy_yaml("churn"), policy_yaml("fraud", approval=APPROVAL)],
        training=FakeTrainingBackend(),
    )
    w.handle(start_promotion("churn", "1"))
    w.run()
    [done] = w.aggregate("churn").promotion.history
    w.handle(start_promotion("fraud", "4"))
    active = w.aggregate("fraud").promotion.active
    assert active is not None

    found = w.runtime.queries.find_promotion(active.id)
    assert found is not None
    model, document = found
    assert model == "fraud"
    assert (document["candidate_version"], document["status"]) == ("4", "awaiting_approval")

    found = w.runtime.queries.find_promotion(done.promotion_id)
    assert found is not None
    model, document = found
    assert model == "churn"
    assert (document["candidate_version"], document["outcome"]) == ("1", "completed")

    assert w.runtime.queries.find_promotion("churn-v9-20990101T000000") is None


def test_the_audit_by_pages_and_the_trail_of_one_promotion():
    w = fake_runtime(policy_yaml("churn", approval=APPROVAL, on_newer_candidate="supersede"))
    w.handle(landed("churn", 1))
    w.handle(start_promotion("churn", "1"))
    first = w.aggregate("churn").promotion.active
    assert first is not None
    w.clock.advance(60)
    w.handle(start_promotion("churn", "2"))  # supersedes v1
    second = w.aggregate("churn").promotion.active
    assert second is not None and second.id != first.id

    queries = w.runtime.queries
    pages, continuation = [], None
    while True:
        page = queries.audit("churn", limit=3, continuation=continuation)
        pages.append(page.records)
        if page.continuation is None:
            break
        continuation = page.continuation
    everything = [record for page in pages for record in page]
    assert all(len(page) <= 3 for page in pages) and len(pages) > 2
    assert everything == w.audit.read("churn")  # each record once, oldest first
    assert everything[0].action == "retrain.data_accumulated"

    of_first = queries.audit_trail("churn", first.id)
    assert {r.promotion_id for r in of_first} == {first.id}
    assert [r.action for r in of_first] == [
        "promotion.started",
        "promotion.staging_gate",
        "gate.passed",
        "promotion.awaiting_approval",
        "promotion.rolling_back",
        "promotion.rolled_back",
    ]
    assert of_first[-1].detail["cause"] == "superseded by v2"
    first_page = queries.audit("churn", first.id, limit=2)
    assert first_page.records == of_first[:2] and first_page.continuation
    with pytest.raises(InvalidContinuation):  # a token of the first promotion's pages
        queries.audit("churn", second.id, continuation=first_page.continuation)
    of_second = queries.audit_trail("churn", second.id)
    assert of_second[0].action == "promotion.started" and of_second[0].cause_id == "start:churn:2"
    with pytest.raises(UnknownModel):
        queries.audit("fraud")  # no policy here


def test_the_runs_are_read_from_the_audit_of_their_ends_beyond_the_short_history():
    w = fake_runtime(training=FakeTrainingBackend(auto_complete=True))
    older = [
        AuditRecord(
            model="churn",
            aggregate_version=version,
            time=START,
            action="retrain.job_failed" if version % 2 else "retrain.job_completed",
            to_state="failed" if version % 2 else "completed",
            detail={"run_id": f"churn-old-{version}", "error": None},
        )
        for version in range(1, MAX_RUNS + 6)  # more runs than the tracker keeps
    ]
    w.audit.append(older)
    w.store.save("churn", ModelAggregate.new("churn").model_copy(update={"version": 100}), None)
    w.handle(landed("churn", 1))
    w.run()  # one real run, recorded in the tracker too
    [recent] = w.aggregate("churn").retrain.runs

    queries = w.runtime.queries
    runs, continuation = queries.runs("churn", limit=10)
    seen = list(runs)
    while continuation:
        page, continuation = queries.runs("churn", limit=10, continuation=continuation)
        seen.extend(page)
    assert [run["run_id"] for run in seen] == [r.detail["run_id"] for r in older] + [recent.run_id]
    assert seen[0]["status"] == "failed" and seen[1]["status"] == "completed"
    assert "reason" not in seen[0]  # an old run: only what its end recorded
    last = seen[-1]
    assert (last["status"], last["registered_version"]) == ("completed", recent.registered_version)
    assert last["reason"] == recent.reason and last["submitted_at"] is not None
    with pytest.raises(InvalidContinuation):
        queries.runs("churn", continuation="garbage")


def test_the_status_is_bounded_whatever_the_history():
    w = fake_runtime(training=FakeTrainingBackend(auto_complete=True))
    for n in range(1, 8):
        w.handle(landed("churn", n))
        w.run()
    status = w.runtime.queries.model_status("churn")
    retrain = status["retrain"]
    assert len(w.aggregate("churn").retrain.runs) == 7
    assert len(retrain["runs"]) == 5 and retrain["runs_kept"] == 7
    assert retrain["runs"][-1]["run_id"] == w.aggregate("churn").retrain.runs[-1].run_id
    text = json.dumps(status)
    assert "seen_keys" not in text and "blob:" not in text  # no data key, anywhere

    # A job on many items: its count and a sample; data waiting: a count and a sample.
    w = fake_runtime()  # jobs stay running
    w.handle(landed("churn", *range(40)))
    w.clock.advance(1)
    w.deliver_due()
    w.handle(landed("churn", *range(40, 60)))
    retrain = w.runtime.queries.model_status("churn")["retrain"]
    job = retrain["current_job"]
    assert job["data_count"] == 40 and 0 < len(job["data_sample"]) <= DATA_SAMPLE
    assert retrain["pending"]["count"] == 20 and len(retrain["pending"]["sample"]) <= DATA_SAMPLE
    assert "blob:" not in json.dumps(retrain)


def test_model_status_shows_the_samples_a_canary_step_waits_for():
    canary = "{steps: [10, 50], bake: 5m, gates: [{metric: accuracy, margin: 0.05}]}"
    w = fake_runtime(policy_yaml("churn", canary=canary))
    w.seed_champion("churn", "1")
    assert w.runtime.queries.model_status("churn")["canary_samples"] is None
    w.handle(start_promotion("churn", "2"))
    w.run(until=lambda: w.aggregate("churn").promotion.active.status == "canary")  # type: ignore[union-attr]
    shown = w.runtime.queries.model_status("churn")["canary_samples"]
    [gate] = shown["gates"]
    assert shown["step"] == "canary-1" and shown["look"] == 1
    assert gate["metric"] == "accuracy" and gate["unit"] == "labeled requests"
    first, last = gate["required_by_step"]
    assert gate["required_this_step"] == first
    assert 0 < first["canary"] < last["canary"] and first["production"] > first["canary"]
    assert f"{first['canary']:,} canary" in shown["summary"]
    assert shown["deadline"] is not None and "paused" in shown["when_time_runs_out"]
