"""A first model's production bake without live traffic, through the service layer on the
in-memory fakes, for each value of the policy's `first_model.bake_without_traffic`: what the
endpoint serves meanwhile, how it ends, and what `status` says while it waits."""

from __future__ import annotations

import json

from orchestrator.messages import Envelope
from promotion.commands import PromoteNow
from tests.fakes import FakeTrainingBackend, FakeWorld, fake_runtime, landed, message, policy_yaml
from tests.harness import signed

OPS = "ops@contoso.com"
NEEDED = 5  # policy_yaml's canary.min_samples_per_arm


def first_model(mode: str | None, requests: int, errors: int = 0) -> FakeWorld:
    """A first model trained and deployed; the endpoint gets `requests` (and `errors`) per
    bake check's window."""
    overrides = {} if mode is None else {"first_model": f"{{bake_without_traffic: {mode}}}"}
    w = fake_runtime(
        policy_yaml("churn", **overrides), training=FakeTrainingBackend(auto_complete=True)
    )
    w.metrics.requests, w.metrics.errors = requests, errors
    w.handle(landed("churn", 1))
    return w


def checks_short(w: FakeWorld) -> int:
    active = w.aggregate("churn").promotion.active
    return active.traffic_wait.checks if active and active.traffic_wait else 0


def outcome(w: FakeWorld) -> str:
    return str(w.aggregate("churn").promotion.history[-1].outcome)


def test_hold_keeps_the_first_model_serving_and_status_says_what_it_waits_for() -> None:
    w = first_model(None, requests=2)  # hold is the default
    w.run(until=lambda: checks_short(w) >= 6)  # twice as many checks as max_extensions
    status = w.runtime.queries.model_status("churn")
    json.dumps(status)  # what the API sends
    assert status["active_promotion"]["status"] == "production_bake"
    assert status["production"]["version"] == "1"
    waiting = status["waiting_for_traffic"]
    assert (waiting["requests"], waiting["errors"], waiting["needed"]) == (2, 0, NEEDED)
    assert waiting["bake_without_traffic"] == "hold"
    assert waiting["checks_short"] == 6
    assert waiting["next_check_at"] == status["active_promotion"]["check_due_at"]
    assert f"2 of {NEEDED} requests on churn-v1" in waiting["summary"]
    assert "keeps waiting" in waiting["when_time_runs_out"]
    assert w.endpoint.live == {"churn-v1": 100}  # it serves meanwhile
    assert w.audit.actions("churn").count("bake.waiting_for_traffic") == 6

    w.metrics.requests = NEEDED  # the traffic comes
    w.run()
    assert outcome(w) == "completed"
    status = w.runtime.queries.model_status("churn")
    assert status["waiting_for_traffic"] is None and status["active_promotion"] is None
    assert status["last_known_good"]["version"] == "1"


def test_a_person_ends_a_held_first_model_bake_with_promote_now() -> None:
    w = first_model("hold", requests=0)
    w.run(until=lambda: checks_short(w) >= 1)
    active = w.aggregate("churn").promotion.active
    assert active is not None
    command: Envelope = message(
        "PromoteNow",
        "churn",
        PromoteNow(promotion_id=active.id, reason="a demo without traffic", requested_by=OPS),
    )
    assert w.handle(signed(w.runtime, command, OPS, roles=["Promotion.Operate"])).status == (
        "applied"
    )
    assert outcome(w) == "completed"
    assert w.endpoint.live == {"churn-v1": 100} and w.endpoint.violations == []
    assert w.events.types()[-1] == "promotion.completed"


def test_pass_completes_a_first_model_that_served_nothing_wrong() -> None:
    w = first_model("pass", requests=0)
    w.run()
    assert outcome(w) == "completed"
    assert "bake.passed_without_traffic" in w.audit.actions("churn")
    assert w.endpoint.live == {"churn-v1": 100}


def test_pass_holds_a_first_model_that_served_errors() -> None:
    w = first_model("pass", requests=3, errors=1)
    w.run(until=lambda: checks_short(w) >= 2)
    waiting = w.runtime.queries.model_status("churn")["waiting_for_traffic"]
    assert (waiting["requests"], waiting["errors"]) == (3, 1)
    assert "it served 1 error(s)" in waiting["when_time_runs_out"]


def test_rollback_removes_the_first_model_after_its_extensions_and_nothing_serves() -> None:
    w = first_model("rollback", requests=2)
    w.run()
    assert outcome(w) == "rolled_back"
    assert checks_short(w) == 0  # nothing active
    assert w.aggregate("churn").promotion.champion is None
    assert w.endpoint.live == {} and "churn-v1" not in w.endpoint.deployed
    # canary.max_extensions (3, the default) extensions, then the rollback.
    assert w.audit.actions("churn").count("gate.extended") == 3
    [event] = w.events.of_type("promotion.rolled_back")
    assert event["nothing_serves"] is True


def test_the_cli_says_what_a_first_model_waits_for() -> None:
    from rich.console import Console

    from devhost.cli.render import render_model

    w = first_model(None, requests=2)
    w.run(until=lambda: checks_short(w) >= 1)
    console = Console(record=True, width=200)
    for part in render_model(w.runtime.queries.model_status("churn")):
        console.print(part)
    text = console.export_text()
    assert f"2 of {NEEDED} requests on churn-v1" in text
    assert "then: " in text and "keeps waiting" in text
