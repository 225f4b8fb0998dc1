"""The timer trigger runs the production monitor after the sweep (triggers/maintenance.py):
a decayed champion starts a retrain with no person; a failing monitor is logged, not raised
over the sweep's work."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from domain.metrics import ArmStats
from orchestrator.aggregate import ModelAggregate
from orchestrator.bootstrap import set_runtime
from retrain.state import RunRecord
from tests.fakes import FakeWorld, fake_runtime
from tests.harness import policy_yaml
from triggers import maintenance

MONITOR = "{window: 1h, min_samples: 100, accuracy_drop: 0.03, cooldown: 6h, every: 10m}"


def user(builder: Any) -> Any:
    return builder._function.get_user_function()


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    world = fake_runtime(policy_yaml("churn", monitor=MONITOR))
    deployment = world.seed_champion("churn", "3").deployment
    run = RunRecord(
        run_id="churn-run-1",
        status="completed",
        registered_version="3",
        data_count=1,
        data_sample=["https://acct.blob.core.windows.net/training-data/churn/a.csv"],
    )

    def with_history(aggregate: ModelAggregate) -> ModelAggregate:
        return aggregate.model_copy(
            update={"retrain": aggregate.retrain.model_copy(update={"runs": [run]})}
        )

    world.store.seed("churn", with_history)
    world.metrics.candidate = {"accuracy": 0.95}
    world.metrics.arm_stats[deployment] = ArmStats(
        deployment=deployment, requests=400, labeled=400, correct=300
    )
    world.clock.advance(timedelta(hours=2))
    set_runtime(world.runtime)
    yield world
    set_runtime(None)


def test_the_timer_starts_a_decay_retrain_and_logs_it(world, caplog):
    with caplog.at_level("INFO"):
        user(maintenance.outbox_sweeper)(TimerRequest(past_due=False))
    [request] = world.training.submissions
    assert request.run_id.startswith("churn-decay-")
    assert f"retrain {request.run_id} started" in caplog.text
    user(maintenance.outbox_sweeper)(TimerRequest(past_due=False))  # the next pass: not due
    assert len(world.training.submissions) == 1


def test_a_monitor_that_cannot_load_a_model_is_logged_and_the_timer_returns(world, caplog):
    world.store.faults.fail_always("load", RuntimeError("storage down"))
    with caplog.at_level("ERROR"):
        user(maintenance.outbox_sweeper)(TimerRequest(past_due=False))
    assert "monitor: churn could not be evaluated: RuntimeError: storage down" in caplog.text
    assert world.training.submissions == []
