"""End to end: the `make demo` story (its demo policy's short timings, no MLflow UI) on real
Azurite, devhost, the local pipeline runner, the local endpoint and MLflow. Three models: the
first goes to production, a better one walks the canary to production, and one trained on
flipped labels (which fools the offline evaluation, whose holdout is flipped too) is caught by
its canary gate and rolled back."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from devhost.demo.story import MODEL, DemoOptions, run_demo
from domain.naming import deployment_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the whole loop, on 2 cores


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    options = DemoOptions(
        output_dir=output,
        mlflow_ui=False,
        phase_timeout=240,
        console=Console(file=io.StringIO(), force_terminal=False),
    )
    return run_demo(options)


def test_each_chapter_ends_as_the_story_says(demo):
    outcomes = [(phase.version, phase.outcome) for phase in demo.phases]
    assert outcomes == [("1", "completed"), ("2", "completed"), ("3", "rolled_back")]


def test_the_better_model_serves_all_traffic(demo):
    production = demo.final_status["production"]
    assert production["version"] == "2"
    assert demo.final_status["last_known_good"]["version"] == "2"
    assert demo.final_status["active_promotion"] is None
    assert demo.endpoint_traffic == {deployment_name(MODEL, "2"): 100}


def audit_of(demo, version: str) -> list[dict]:
    [phase] = [phase for phase in demo.phases if phase.version == version]
    return demo.promotions[phase.promotion_id]["audit"]


def test_the_canary_walked_every_step_with_passing_gates(demo):
    audit = audit_of(demo, "2")
    weights = [
        record["detail"]["traffic"]
        for record in audit
        if record["to_state"] == "canary" and "traffic" in record["detail"]
    ]
    assert weights == [10, 25, 50]
    # Every canary step was looked at (one look per step of the sequential design: an early
    # look may be undecided and go on to the next step); none failed; the gates passed by the
    # end, and so did staging and the production bake.
    looked = {record["detail"]["step"] for record in audit if record["action"] == "gate.look"}
    assert looked >= {"canary-1", "canary-2", "canary-3"}
    assert not [record for record in audit if record["action"] == "gate.failed"]
    passed = {record["detail"]["step"] for record in audit if record["action"] == "gate.passed"}
    assert passed >= {"staging", "bake"} and passed & {"canary-1", "canary-2", "canary-3"}
    approvals = [record for record in audit if record["to_state"] == "deploying"]
    assert approvals and approvals[0]["actor"] == "demo-lead@example.com"
    assert audit[-1]["to_state"] == "completed"


def test_the_flipped_label_model_failed_its_canary_and_was_rolled_back(demo):
    audit = audit_of(demo, "3")
    failed = [record for record in audit if record["action"] == "gate.failed"]
    assert failed, "the canary gate never failed"
    evidence = {item["gate"]: item for item in failed[-1]["detail"]["evidence"]}
    accuracy = evidence["canary:accuracy"]
    assert accuracy["outcome"] == "fail"
    assert accuracy["values"]["canary"] < accuracy["values"]["production"] - 0.3
    assert min(accuracy["samples"].values()) >= 120  # judged on enough samples, not on noise
    states = [record["to_state"] for record in audit if record["to_state"]]
    assert states[-2:] == ["rolling_back", "rolled_back"]


def test_traffic_was_served_and_a_report_was_written(demo):
    assert demo.traffic["sent"] > 1000
    served = demo.traffic["served"]
    assert served.get(deployment_name(MODEL, "3"), 0) > 0  # the canary really took traffic
    assert demo.timeline_png.stat().st_size > 10_000
    assert "breast-cancer-retrain" in demo.report_html.read_text()
