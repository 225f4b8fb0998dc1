"""End to end: the second demo story (`make demo STORY=rings`, alias `decay`; its policy's short
timings, no MLflow UI) on real Azurite, devhost (its timers sped up), the local pipeline runner,
the local endpoint server hosting two endpoints (the model's, and a second standing in for a
second region) and MLflow. A first model goes to production without a shadow, on both rings; a
better one is shadowed (mirrored traffic, three gates), walks the canary and the production
bake on the first ring, then ring 2 (deployed, all its traffic, its bake and gate), and
completes; then a share of the feedback labels flips and the production monitor, on the
maintenance timer, starts a retrain by itself. Asserted from the state, the audit and the
endpoint server the demo read back, not from its text."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from devhost.demo.decay_story import POLICY_DIR, run_decay_demo
from devhost.demo.story import MODEL, DemoOptions
from domain.naming import deployment_name
from orchestrator.policy_files import load_policy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the whole loop, on 2 cores

POLICY = load_policy(POLICY_DIR / f"{MODEL}.yml")
FIRST, SECOND = POLICY.endpoint, POLICY.rings[1].endpoint
V1, V2 = deployment_name(MODEL, "1"), deployment_name(MODEL, "2")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("decay-demo")
    options = DemoOptions(
        output_dir=output,
        mlflow_ui=False,
        # The second phase walks shadow, three canary steps, a bake and ring 2: on 2 cores
        # shared with the other xdist worker's flows it has taken more than 300 s.
        phase_timeout=600,
        console=Console(file=io.StringIO(), force_terminal=False),
    )
    return run_decay_demo(options)


def audit_of(demo, version: str) -> list[dict]:
    [phase] = [phase for phase in demo.phases if phase.version == version]
    return demo.promotions[phase.promotion_id]["audit"]


def moves(audit: list[dict]) -> list[str]:
    return [record["to_state"] for record in audit if record["action"].startswith("promotion.")]


def walk(audit: list[dict]) -> list[tuple[str, str]]:
    """The promotion's moves as (state, step), repeats of a step (a canary's new weight on
    the same step) kept once. A move is `promotion.<its new state>` with its step; other
    `promotion.*` records (`promotion.started`) are not."""
    steps: list[tuple[str, str]] = []
    for record in audit:
        if record["action"] == f"promotion.{record['to_state']}" and "step" in record["detail"]:
            move = (record["to_state"], record["detail"]["step"])
            if not steps or steps[-1] != move:
                steps.append(move)
    return steps


def ring_gates(audit: list[dict]) -> list[dict]:
    return [r for r in audit if r["action"].startswith("gate.") and r["detail"]["step"] == "ring-2"]


def test_both_promotions_completed_and_the_better_model_serves(demo):
    assert [(phase.version, phase.outcome) for phase in demo.phases] == [
        ("1", "completed"),
        ("2", "completed"),
    ]
    assert demo.final_status["production"]["version"] == "2"
    assert demo.endpoint_traffic == {V2: 100}


def test_each_ring_serves_the_better_model_at_the_end(demo):
    # Read from the endpoint server itself: each endpoint's own traffic map.
    assert demo.rings_traffic == {FIRST: {V2: 100}, SECOND: {V2: 100}}
    # The state agrees: both rings serve v2 (the decay retrain's v3, if its promotion has
    # started yet, waits for an approval the story does not give).
    rings = demo.final_status["rings"]
    assert [(ring["endpoint"], ring["serving_version"]) for ring in rings] == [
        (FIRST, "2"),
        (SECOND, "2"),
    ]


def test_the_first_model_walked_both_rings_so_ring_2_has_a_known_good(demo):
    audit = audit_of(demo, "1")
    assert walk(audit)[-3:] == [
        ("production_bake", "bake"),
        ("ring", "ring-2"),
        ("completed", "ring-2"),
    ]
    [moved] = [r for r in audit if r["action"] == "ring.traffic_moved"]
    # Ring 2 served nothing before: v1 takes all of it, with no old deployment kept.
    assert moved["detail"]["endpoint"] == SECOND and moved["detail"]["traffic"] == {V1: 100}
    assert ring_gates(audit)[-1]["action"] == "gate.passed"
    # Ring 2's own traffic reached v1 (and later v2), each on its own /{endpoint}/score.
    served = demo.traffic["endpoints"][SECOND]["served"]
    assert served.get(V1, 0) > 0 and served.get(V2, 0) > 0


def test_the_first_model_skipped_the_shadow(demo):
    audit = audit_of(demo, "1")
    assert [record["action"] for record in audit].count("shadow.skipped") == 1
    assert "shadow" not in moves(audit)


def test_the_better_model_was_shadowed_then_walked_the_canary(demo):
    audit = audit_of(demo, "2")
    states = moves(audit)
    assert states.index("deploying") < states.index("shadow") < states.index("canary")
    assert states[-3:] == ["production_bake", "ring", "completed"]
    [entered] = [r for r in audit if r["action"] == "promotion.shadow"]
    assert entered["detail"]["mirror"] == POLICY.shadow.percent
    weights = [
        record["detail"]["traffic"]
        for record in audit
        if record["action"] == "promotion.canary" and "traffic" in record["detail"]
    ]
    assert sorted(set(weights)) == [10, 25, 50]


def test_the_shadow_was_judged_on_mirrored_pairs_by_three_gates(demo):
    audit = audit_of(demo, "2")
    looks = [
        record
        for record in audit
        if record["action"].startswith("gate.") and record["detail"].get("step") == "shadow"
    ]
    assert looks and looks[-1]["action"] == "gate.passed"
    evidence = {item["gate"]: item for item in looks[-1]["detail"]["evidence"]}
    assert set(evidence) == {"shadow:error_rate", "shadow:latency_p95", "shadow:agreement"}
    assert all(item["outcome"] == "pass" for item in evidence.values())
    agreement = evidence["shadow:agreement"]
    assert agreement["samples"]["pairs"] >= POLICY.shadow.gates.min_samples
    assert agreement["values"]["agreement"] > POLICY.shadow.gates.min_agreement
    # The candidate answered mirrored copies while production took all the live traffic.
    assert evidence["shadow:error_rate"]["samples"]["candidate"] >= POLICY.shadow.gates.min_samples


def test_the_better_model_walked_shadow_canary_bake_ring_2_to_completed(demo):
    canary_steps = [("canary", f"canary-{i + 1}") for i in range(len(POLICY.canary.steps))]
    walked = [move for move in walk(audit_of(demo, "2")) if move[0] != "promoting"]
    deploy = walked.index(("deploying", "deploy"))
    assert walked[deploy:] == [
        ("deploying", "deploy"),
        ("shadow", "shadow"),
        *canary_steps,
        ("production_bake", "bake"),
        ("ring", "ring-2"),
        ("completed", "ring-2"),
    ]


def test_ring_2_was_judged_on_its_own_traffic(demo):
    audit = audit_of(demo, "2")
    [entered] = [r for r in audit if r["action"] == "promotion.ring"]
    assert entered["detail"]["endpoint"] == SECOND
    [moved] = [r for r in audit if r["action"] == "ring.traffic_moved"]
    # All of ring 2's traffic on v2, its own known-good (v1) kept with none as its way back.
    assert moved["detail"]["endpoint"] == SECOND
    assert moved["detail"]["traffic"] == {V2: 100, V1: 0}
    gates = ring_gates(audit)
    assert gates and gates[-1]["action"] == "gate.passed"
    [evidence] = gates[-1]["detail"]["evidence"]
    assert evidence["gate"] == f"ring:{SECOND}:error_rate" and evidence["outcome"] == "pass"
    assert evidence["samples"]["candidate"] >= POLICY.canary.min_samples_per_arm
    assert evidence["values"]["candidate"] <= POLICY.rings[1].max_error_rate


def decay_records(demo) -> tuple[dict, list[dict]]:
    """The decay decision and every record of the run it started, oldest first."""
    [detected] = [r for r in demo.model_audit if r["action"] == "monitor.decay_detected"]
    run_id = detected["detail"]["run_id"]
    return detected, [r for r in demo.model_audit if r["detail"].get("run_id") == run_id]


def test_the_monitor_started_a_retrain_with_its_reason_and_evidence(demo):
    detected, _ = decay_records(demo)
    assert detected["actor"] == "monitor"  # no person
    detail = detected["detail"]
    assert detail["verdict"] == "decayed" and detail["champion_version"] == "2"
    [accuracy] = [check for check in detail["checks"] if check["metric"] == "accuracy"]
    assert accuracy["outcome"] == "breached"
    assert accuracy["samples"] >= POLICY.monitor.min_samples
    assert accuracy["observed"] < accuracy["offline"] - POLICY.monitor.accuracy_drop
    assert accuracy["p_value"] < accuracy["alpha"]
    assert detail["reason"].startswith("accuracy ")


def test_the_decay_retrain_ran_to_a_new_version_without_new_data(demo):
    detected, records = decay_records(demo)
    run_id = detected["detail"]["run_id"]
    # The run's own records (the promotion its version starts may name the run too).
    own = [r for r in records if not r["action"].startswith("promotion.")]
    actions = [record["action"] for record in own]
    assert actions[0] == "monitor.decay_detected"
    assert "retrain.job_submitted" in actions and actions[-1] == "retrain.job_completed"
    assert own[-1]["detail"]["registered_version"] == "3"
    # The state agrees: the monitor's cooldown stamp names the run, which ended completed.
    monitor = demo.final_status["retrain"]["monitor"]
    assert monitor["triggered_run"] == run_id
    [run] = [run for run in demo.final_status["retrain"]["runs"] if run["run_id"] == run_id]
    assert run["status"] == "completed" and run["reason"].startswith("decay (monitor)")
    # Only two data windows opened in the story (the two chapters' batches): no data landed
    # for the decay retrain.
    opened = [r for r in demo.model_audit if r["action"] == "retrain.window_opened"]
    assert len(opened) == 2


def test_the_milestones_come_in_the_story_order(demo):
    said = [f"{m.what}: {m.detail}" for m in demo.milestones]
    seconds = [m.seconds for m in demo.milestones]
    assert seconds == sorted(seconds)

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(said) if line.startswith(prefix))

    order = [
        first("v1: first model: no shadow"),
        first("v1: ring-2: deploying on " + SECOND),
        first("v1: completed"),
        first("v2: shadow: "),
        first("v2: shadow judged, gate.passed"),
        first("v2: canary: 10%"),
        first("v2: production bake"),
        first("v2: ring-2: deploying on " + SECOND),
        first(f"v2: ring {SECOND}: traffic"),
        first("v2: ring-2 judged, gate.passed"),
        first("v2: completed"),
        first("monitor: v2 healthy"),
        first("traffic: drift"),
        first("monitor: v2 decayed"),
        first("monitor: retrain "),
    ]
    assert order == sorted(order)
    assert said[-1].startswith("monitor: retrain") and "completed: v3" in said[-1]


def test_a_report_with_the_milestones_was_written(demo):
    html = demo.report_html.read_text()
    assert "Milestones" in html and "decayed" in html
    assert demo.timeline_png.stat().st_size > 10_000
