"""The metrics a transition moves (docs/observability.md), read with the SDK's in-memory metric
reader, on the in-memory fakes (no Azurite). tests/faults/test_tracing.py reads the same
instruments on a whole flow; here, each outcome the flow does not reach: promotions ending
rejected, failed or rolled back, gate verdicts split by gate, training runs that fail or are
canceled, data items already seen, and the time spent in each promotion state.

Every test uses a model name of its own: the reader is the process's, shared by all tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from domain.metrics import ArmStats
from orchestrator.ports import JobStatus
from promotion.state import TERMINAL
from tests.fakes import FakeWorld, fake_runtime, landed, start_promotion
from tests.orchestrator.test_handlers import approve, canary_policy
from tests.telemetry import _points, counter, histogram_count, install

OUTCOMES = ("completed", "rolled_back", "failed", "rejected")


@pytest.fixture(autouse=True)
def metric_reader() -> Iterator[None]:
    install()
    yield


def histogram(name: str, **attributes: str) -> list[tuple[dict[str, Any], int, float]]:
    """Each data point of histogram `name` with these attributes: (attributes, count, sum)."""
    return [
        (dict(point.attributes), int(point.count), float(point.sum))
        for point in _points(name, attributes)
    ]


def outcomes(model: str) -> dict[str, int]:
    return {
        outcome: counter("retrain.promotions", model=model, outcome=outcome) for outcome in OUTCOMES
    }


def finish(w: FakeWorld, model: str) -> None:
    w.run(until=lambda: w.aggregate(model).promotion.active is None)
    assert w.aggregate(model).promotion.active is None


# --------------------------------------------------------------------------- promotions


def promote(model: str) -> FakeWorld:
    w = fake_runtime(canary_policy(model))
    w.seed_champion(model, "1")
    w.handle(start_promotion(model, "2"))
    w.clock.advance(60)
    w.handle(approve(w, model))
    finish(w, model)
    return w


def reject_at_staging(model: str) -> FakeWorld:
    w = fake_runtime(canary_policy(model))
    w.metrics.candidate = {"auc": 0.6}  # under the staging threshold (0.7)
    w.seed_champion(model, "1")
    w.handle(start_promotion(model, "2"))
    return w


def fail_the_deployment(model: str) -> FakeWorld:
    w = fake_runtime(canary_policy(model, approval="{required: false}"))
    w.seed_champion(model, "1")
    w.endpoint.failing_versions.add("2")
    w.handle(start_promotion(model, "2"))
    finish(w, model)
    return w


def starve_the_canary(model: str) -> FakeWorld:
    w = fake_runtime(canary_policy(model, approval="{required: false}"))
    w.seed_champion(model, "1")
    # Too few requests reach the candidate: the step waits, its time runs out, rolled back.
    w.metrics.arm_stats[f"{model}-v2"] = ArmStats(deployment=f"{model}-v2", requests=10)
    w.handle(start_promotion(model, "2"))
    finish(w, model)
    return w


@pytest.mark.parametrize(
    ("outcome", "run"),
    [
        ("completed", promote),
        ("rejected", reject_at_staging),
        ("failed", fail_the_deployment),
        ("rolled_back", starve_the_canary),
    ],
)
def test_a_promotion_is_counted_once_by_how_it_ended(outcome: str, run: Any) -> None:
    model = f"ends-{outcome.replace('_', '-')}"
    w = run(model)
    [entry] = w.aggregate(model).promotion.history
    assert str(entry.outcome) == outcome
    assert outcomes(model) == {name: int(name == outcome) for name in OUTCOMES}


def test_every_way_a_promotion_ends_is_an_outcome_counted_above() -> None:
    # The counted outcomes are the terminal statuses: one added there needs a case above
    # (there is no "aborted": a superseded promotion is rolled back).
    assert {str(status) for status in TERMINAL} == set(OUTCOMES)


def test_an_approval_that_times_out_is_counted_rejected() -> None:
    model = "ends-timed-out"
    w = fake_runtime(canary_policy(model))
    w.seed_champion(model, "1")
    w.handle(start_promotion(model, "2"))
    w.run()  # the approval's timeout (1 h): policy says reject
    assert outcomes(model) == {"completed": 0, "rolled_back": 0, "failed": 0, "rejected": 1}


# --------------------------------------------------------------------------- gates


def test_gate_verdicts_are_counted_per_gate() -> None:
    passed = "gates-pass"
    promote(passed)
    # The staging gate (a threshold) once; the canary steps and the bake judged on samples.
    assert counter("retrain.gate.verdicts", model=passed, gate="threshold", verdict="pass") == 1
    samples = counter("retrain.gate.verdicts", model=passed, gate="samples", verdict="pass")
    assert samples >= 3  # two canary steps and the production bake
    assert counter("retrain.gate.verdicts", model=passed, verdict="fail") == 0

    failed = "gates-fail"
    reject_at_staging(failed)
    assert counter("retrain.gate.verdicts", model=failed, gate="threshold", verdict="fail") == 1
    assert counter("retrain.gate.verdicts", model=failed, gate="samples") == 0

    waited = "gates-wait"
    starve_the_canary(waited)
    # Too few samples: inconclusive (each check of the step), never a pass of that gate.
    inconclusive = counter(
        "retrain.gate.verdicts", model=waited, gate="samples", verdict="inconclusive"
    )
    assert inconclusive >= 2
    assert counter("retrain.gate.verdicts", model=waited, gate="samples", verdict="pass") == 0


# --------------------------------------------------------------------------- time in state


def test_time_in_state_is_recorded_per_state_left_with_its_duration() -> None:
    model = "time-in-state"
    w = fake_runtime(canary_policy(model))
    w.seed_champion(model, "1")
    w.handle(start_promotion(model, "2"))
    w.clock.advance(90)  # the approver takes 90 s
    w.handle(approve(w, model))
    [(_, count, seconds)] = histogram(
        "retrain.promotion.time_in_state", model=model, state="awaiting_approval"
    )
    assert (count, seconds) == (1, 90.0)
    finish(w, model)
    states = {
        point[0]["state"] for point in histogram("retrain.promotion.time_in_state", model=model)
    }
    # Each state the promotion went through and left (the end is not left).
    assert {"awaiting_approval", "deploying", "canary", "production_bake"} <= states
    assert "completed" not in states
    assert histogram_count("retrain.promotion.time_in_state", model=model, state="canary") == 1


# --------------------------------------------------------------------------- training runs


def window_closes_into_a_run(w: FakeWorld, model: str, *names: int) -> str:
    """Data lands, its window closes: the run submitted."""
    w.handle(landed(model, *names))
    w.run(until=lambda: w.aggregate(model).retrain.current_job is not None)
    job = w.aggregate(model).retrain.current_job
    assert job is not None
    return job.run_id


def test_training_runs_are_counted_by_result() -> None:
    from tests.harness import policy_yaml

    model = "runs-end"
    w = fake_runtime(policy_yaml(model))
    failed = window_closes_into_a_run(w, model, 1)
    w.training.fail(failed, "out of memory")
    w.run(until=lambda: w.aggregate(model).retrain.current_job is None)
    assert counter("retrain.training.runs", model=model, result="failed") == 1

    canceled = window_closes_into_a_run(w, model, 2)
    assert canceled != failed
    w.training.states[canceled] = JobStatus(job_id=canceled, state="canceled")
    w.run(until=lambda: w.aggregate(model).retrain.current_job is None)
    assert [run.status for run in w.aggregate(model).retrain.runs] == ["failed", "canceled"]
    assert {
        result: counter("retrain.training.runs", model=model, result=result)
        for result in ("completed", "failed", "canceled")
    } == {"completed": 0, "failed": 1, "canceled": 1}


# --------------------------------------------------------------------------- data


def test_data_items_already_seen_are_counted_as_duplicates_by_source() -> None:
    model = "data-dups"
    w = fake_runtime(canary_policy(model))
    w.handle(landed(model, 1, 2))
    w.handle(landed(model, 2, 3, 4))  # item 2 was in the first event
    assert counter("retrain.data.items", model=model, source="eventhub") == 4
    assert counter("retrain.data.duplicates", model=model, source="eventhub") == 1
    w.clock.advance(timedelta(seconds=1).total_seconds())
    w.handle(landed(model, 1, 3))  # both seen before
    assert counter("retrain.data.items", model=model, source="eventhub") == 4
    assert counter("retrain.data.duplicates", model=model, source="eventhub") == 3
