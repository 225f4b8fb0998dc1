"""The timer's summary line (triggers/maintenance.py) counts what its sweep did, the overdue
checks it sent again included, so an operator sees a recovery after a crash in the log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from orchestrator.bootstrap import set_runtime
from tests.fakes import FakeWorld, fake_runtime, start_promotion
from tests.harness import policy_yaml
from triggers import maintenance

CANARY = "{steps: [25, 50], bake: 5m, min_samples_per_arm: 5}"


def user(builder: Any) -> Any:
    return builder._function.get_user_function()


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    """A canary whose gate check was taken by a process that crashed."""
    world = fake_runtime(policy_yaml("churn", canary=CANARY))
    world.seed_champion("churn", "1")
    world.handle(start_promotion("churn", "2"))
    world.run(until=lambda: world.aggregate("churn").promotion.active.status == "canary")  # type: ignore[union-attr]
    [lost] = [item for item in world.bus.pending if item.envelope.type == "GateCheck"]
    lost.delivered = True
    set_runtime(world.runtime)
    yield world
    set_runtime(None)


def summary(caplog: pytest.LogCaptureFixture) -> str:
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("outbox sweep:")]
    return line


def test_the_summary_counts_an_overdue_check_sent_again(world, caplog):
    due = world.aggregate("churn").promotion.active.check_due_at
    world.clock.advance_to(due + timedelta(seconds=30))  # not overdue yet
    with caplog.at_level("INFO", logger="triggers.maintenance"):
        user(maintenance.outbox_sweeper)(TimerRequest(past_due=False))
    assert "0 overdue check(s) re-sent" in summary(caplog)

    caplog.clear()
    world.clock.advance_to(due + timedelta(seconds=61))
    with caplog.at_level("INFO", logger="triggers.maintenance"):
        user(maintenance.outbox_sweeper)(TimerRequest(past_due=False))
    assert summary(caplog).startswith(
        "outbox sweep: 0 effect(s) re-dispatched, 1 overdue check(s) re-sent, 0 promotion(s) stuck"
    )
    assert [e.type for e, _ in world.deliver_due()] == ["GateCheck"]
