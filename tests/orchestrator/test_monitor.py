"""The production monitor's pass (orchestrator/monitor.py) on in-memory fakes: the champion's
live feedback against its own offline accuracy, a retrain with no person, once per cooldown,
exactly once under overlapping timer passes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.metrics import ArmStats
from orchestrator.aggregate import ModelAggregate
from orchestrator.monitor import Monitor
from retrain.monitor import signal_decision
from retrain.state import RunRecord
from tests.fakes import FakeWorld, data_items, fake_runtime
from tests.harness import policy_yaml

MONITOR = "{window: 1h, min_samples: 500, accuracy_drop: 0.03, max_error_rate: 0.01, cooldown: 6h, every: 10m}"  # noqa: E501
LAST_RUN = RunRecord(
    run_id="churn-run-1",
    status="completed",
    registered_version="3",
    data_count=1,
    data_sample=["https://acct.blob.core.windows.net/training-data/churn/a.csv"],
)


@pytest.fixture
def world() -> FakeWorld:
    world = fake_runtime(policy_yaml("churn", monitor=MONITOR))
    champion = world.seed_champion("churn", "3")

    def with_history(aggregate: ModelAggregate) -> ModelAggregate:
        return aggregate.model_copy(
            update={"retrain": aggregate.retrain.model_copy(update={"runs": [LAST_RUN]})}
        )

    world.store.seed("churn", with_history)
    world.metrics.candidate = {"accuracy": 0.95, "auc": 0.97}  # v3's own holdout
    world.clock.advance(timedelta(hours=2))  # v3 has served for longer than the window
    world.deployment = champion.deployment  # type: ignore[attr-defined]
    return world


def feedback(world: FakeWorld, labeled: int, correct: int, requests: int | None = None) -> None:
    deployment = world.deployment  # type: ignore[attr-defined]
    world.metrics.arm_stats[deployment] = ArmStats(
        deployment=deployment,
        requests=requests or labeled,
        errors=0,
        labeled=labeled,
        correct=correct,
    )


def actions(world: FakeWorld) -> list[str]:
    return [record.action for record in world.audit.read("churn")]


def test_decayed_feedback_starts_one_retrain_with_its_evidence_then_waits_the_cooldown(world):
    feedback(world, labeled=1000, correct=850)
    report = world.runtime.monitor.run()
    [started] = report.triggered
    assert started["model"] == "churn" and "accuracy 0.8500 below 0.9200" in started["reason"]
    [request] = world.training.submissions
    assert request.run_id == started["run_id"]
    assert request.data_uris == LAST_RUN.data_sample  # no new data: the last run's, forced
    # What was read: the champion's own offline metrics, its deployment over [now - 1h, now].
    assert world.metrics.offline_reads[-1] == ("churn", "3", None)
    [(_, _, _, [window])] = world.metrics.live_reads
    assert window.deployment == world.deployment  # type: ignore[attr-defined]
    assert window.window_end - window.window_start == timedelta(hours=1)
    assert window.window_end == world.clock()
    decay = next(r for r in world.audit.read("churn") if r.action == "monitor.decay_detected")
    assert decay.actor == "monitor" and decay.detail["checks"][0]["outcome"] == "breached"
    assert "retrain.job_submitted" in actions(world)
    record = world.aggregate("churn").retrain.monitor
    assert record is not None and record.triggered_at == world.clock()

    # The job ends (no model): still decayed, but within the cooldown: nothing more runs.
    world.training.states[request.run_id] = world.training.states[request.run_id].model_copy(
        update={"state": "failed", "error": "no model"}
    )
    world.run(horizon=timedelta(minutes=30))
    assert world.aggregate("churn").retrain.current_job is None
    for _ in range(3):
        world.clock.advance(timedelta(minutes=10))
        world.runtime.monitor.run()
    assert len(world.training.submissions) == 1
    assert world.aggregate("churn").retrain.monitor.verdict == "cooling_down"  # type: ignore[union-attr]

    # After the cooldown, still decayed: the same data would give the same model back, so a
    # second decay retrain of this champion waits for data that landed since.
    world.clock.advance(timedelta(hours=6))
    assert not world.runtime.monitor.run().triggered
    assert world.aggregate("churn").retrain.monitor.verdict == "awaiting_data"  # type: ignore[union-attr]
    assert len(world.training.submissions) == 1
    world.ledger.claim(
        "churn", data_items("churn", "fresh"), "test", world.clock(), timedelta(days=30)
    )
    world.clock.advance(timedelta(minutes=10))
    assert world.runtime.monitor.run().triggered
    assert len(world.training.submissions) == 2
    assert world.training.submissions[-1].data_uris == [data_items("churn", "fresh")[0].uri]


def test_a_model_with_a_long_name_is_monitored_too():
    model = "m" * 48  # the longest a policy allows
    world = fake_runtime(policy_yaml(model, monitor=MONITOR).replace(f"{model}-ep", "long-ep"))
    champion = world.seed_champion(model, "3")
    world.metrics.candidate = {"accuracy": 0.95}
    world.clock.advance(timedelta(hours=2))
    world.metrics.arm_stats[champion.deployment] = ArmStats(
        deployment=champion.deployment, requests=1000, errors=0, labeled=1000, correct=990
    )
    report = world.runtime.monitor.run()
    assert report.failed == [] and report.evaluated == {model: "healthy"}


def test_healthy_feedback_starts_nothing_and_too_little_is_recorded_as_such(world):
    feedback(world, labeled=1000, correct=945)
    report = world.runtime.monitor.run()
    assert report.evaluated == {"churn": "healthy"} and not report.triggered
    world.clock.advance(timedelta(minutes=10))
    feedback(world, labeled=20, correct=0, requests=20)
    report = world.runtime.monitor.run()
    assert report.evaluated == {"churn": "insufficient_data"} and not report.triggered
    assert world.training.submissions == []
    record = world.aggregate("churn").retrain.monitor
    assert record is not None and record.verdict == "insufficient_data"
    assert "fewer than min_samples" in record.reason
    assert actions(world) == ["monitor.evaluated", "monitor.evaluated"]  # each a change
    shown = world.runtime.queries.model_status("churn")["retrain"]["monitor"]
    assert shown["verdict"] == "insufficient_data" and shown["triggered_at"] is None


def test_evaluations_do_not_crowd_real_message_ids_out_of_the_dedup_memory(world):
    before = list(world.aggregate("churn").seen_messages)
    for _ in range(5):
        feedback(world, labeled=1000, correct=990)
        world.runtime.monitor.run()
        world.clock.advance(timedelta(minutes=10))
    after = world.aggregate("churn")
    assert after.retrain.monitor is not None  # evaluated and saved...
    assert after.seen_messages == before  # ...without a handled-message id


def test_a_pass_within_every_reads_nothing_and_writes_nothing(world):
    feedback(world, labeled=1000, correct=945)
    world.runtime.monitor.run()
    world.store.reset_counts()
    reads = len(world.metrics.live_reads)
    world.clock.advance(timedelta(minutes=9))
    report = world.runtime.monitor.run()
    assert report.skipped == {"churn": "evaluated less than monitor.every ago"}
    assert len(world.metrics.live_reads) == reads and world.store.saves == []


def test_overlapping_timer_passes_start_exactly_one_retrain(world):
    feedback(world, labeled=1000, correct=850)
    other = Monitor(world.runtime.ports, world.runtime.handlers)  # another instance's timer
    # It runs a few seconds later, between this pass's read and its write.
    world.store.interleave("churn", lambda: (world.clock.advance(5), other.run()))
    report = world.runtime.monitor.run()
    assert len(world.training.submissions) == 1
    assert world.store.conflicts["churn"] >= 1  # the first pass lost the write, re-decided
    assert report.triggered == [] and "not due" in report.skipped["churn"]
    assert actions(world).count("monitor.decay_detected") == 1


def test_a_crash_after_the_write_sends_the_retrain_from_the_outbox(world):
    feedback(world, labeled=1000, correct=850)
    world.training.faults.fail("submit", RuntimeError("process died"))
    with pytest.raises(RuntimeError):
        world.runtime.monitor._check(  # the pass, unguarded: the dispatch dies
            world.policies["churn"], world.policies["churn"].monitor, _report()
        )
    aggregate = world.aggregate("churn")
    assert aggregate.retrain.monitor is not None and aggregate.retrain.monitor.verdict == "decayed"
    assert [item.effect.kind for item in aggregate.outbox][:1] == ["submit_training_job"]
    world.clock.advance(timedelta(minutes=1))
    world.runtime.maintenance.sweep()  # the sweep dispatches what the write left
    world.runtime.monitor.run()  # and the monitor does not start a second one
    assert len(world.training.submissions) == 1


def test_nothing_is_read_while_a_change_is_under_way_or_nothing_serves():
    world = fake_runtime(policy_yaml("churn", monitor=MONITOR))
    assert world.runtime.monitor.run().skipped == {"churn": "nothing in production"}
    world.seed_champion("churn", "3")
    world.handle(_start_promotion(world))
    report = world.runtime.monitor.run()
    assert report.skipped["churn"].startswith("promotion ")
    assert world.metrics.live_reads == [] and world.metrics.offline_reads[-1][1] == "4"


def test_a_new_version_whose_promotion_is_still_on_the_bus_comes_first(world):
    # A run registered v4 and sent its StartPromotion; not yet handled when the timer runs.
    def with_new_run(aggregate: ModelAggregate) -> ModelAggregate:
        run = LAST_RUN.model_copy(update={"run_id": "churn-run-2", "registered_version": "4"})
        runs = [*aggregate.retrain.runs, run]
        return aggregate.model_copy(
            update={"retrain": aggregate.retrain.model_copy(update={"runs": runs})}
        )

    world.store.seed("churn", with_new_run)
    feedback(world, labeled=1000, correct=850)
    report = world.runtime.monitor.run()
    assert report.triggered == []
    assert report.skipped["churn"] == "v4 of run churn-run-2 is on its way to a promotion"
    assert world.training.submissions == []


def test_unreadable_metrics_are_recorded_and_never_trigger(world):
    feedback(world, labeled=1000, correct=100)
    world.metrics.live_error = RuntimeError("MLflow unreachable")
    report = world.runtime.monitor.run()
    assert report.evaluated == {"churn": "unreadable"} and world.training.submissions == []


def test_a_model_without_monitor_is_not_watched():
    world = fake_runtime(policy_yaml("churn"))
    world.seed_champion("churn", "3")
    report = world.runtime.monitor.run()
    assert (report.evaluated, report.skipped, report.failed) == ({}, {}, [])


def test_an_outside_signal_starts_the_same_retrain_within_the_same_cooldown(world):
    signal = signal_decision(
        source="azureml-model-monitor", signal="prediction_drift", detail="0.31 > 0.2",
        champion_version=None,
    )  # fmt: skip
    assert world.runtime.monitor.signal("churn", signal).status == "applied"
    assert len(world.training.submissions) == 1
    decay = next(r for r in world.audit.read("churn") if r.action == "monitor.decay_detected")
    assert decay.detail["champion_version"] == "3" and decay.actor == "azureml-model-monitor"
    feedback(world, labeled=1000, correct=850)
    world.clock.advance(timedelta(minutes=10))
    world.runtime.monitor.run()  # a job is running: busy, nothing read
    assert len(world.training.submissions) == 1


def _report():
    from orchestrator.monitor import MonitorReport

    return MonitorReport()


def _start_promotion(world: FakeWorld):
    from tests.fakes import start_promotion

    return start_promotion("churn", "4")
