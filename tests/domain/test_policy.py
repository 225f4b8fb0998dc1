"""The complete example policy parses; invalid policy files name the file and the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from domain.policy import PolicyError, parse_policy
from orchestrator.policy_files import load_policy

EXAMPLE = Path(__file__).with_name("example_policy.yml")
BASE = "model: churn\nendpoint: churn-endpoint\ndata: {container: churn-data}\n"


def test_example_policy_parses_with_every_section() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.model == "churn"
    assert policy.data.prefix == "incoming/"
    assert policy.data.label_column == "churned" and len(policy.data.feature_columns or []) == 3
    assert policy.retrain.debounce == timedelta(minutes=10)
    assert policy.monitor is not None and policy.monitor.cooldown == timedelta(hours=6)
    assert policy.pipeline.compute == "cpu-cluster"
    assert [gate.kind for gate in policy.staging.gates] == ["threshold", "champion", "champion"]
    assert policy.staging.max_attempts == 3
    assert policy.approval.required and policy.approval.timeout == timedelta(hours=24)
    assert policy.canary.steps == [10, 25, 50]
    assert [gate.metric for gate in policy.canary.gates] == ["error_rate", "accuracy", "latency_ms"]
    assert [gate.test for gate in policy.canary.gates] == [
        "farrington_manning",
        "farrington_manning",
        "quantile",
    ]
    assert [gate.rate_to_plan for gate in policy.canary.gates[:2]] == [0.02, 0.90]
    assert policy.canary.on_exhausted == "pause" and policy.canary.power == 0.8
    assert policy.canary.max_step_duration == timedelta(hours=24)
    assert policy.production_bake == timedelta(hours=1)
    assert policy.on_newer_candidate == "queue"


def test_minimal_policy_takes_defaults() -> None:
    policy = parse_policy(BASE)
    assert policy.canary.steps == [10, 25, 50] and not policy.approval.required
    # Undecided canaries wait for a person by default; they are never promoted on their own.
    assert policy.canary.on_exhausted == "pause"
    assert (policy.data.label_column, policy.data.feature_columns) == ("label", None)


def test_the_data_section_names_the_label_and_the_features() -> None:
    text = BASE.replace(
        "churn-data}",
        "churn-data, label_column: churned, feature_columns: [tenure, 'monthly charges (usd)']}",
    )
    data = parse_policy(text).data
    assert data.label_column == "churned"
    assert data.feature_columns == ["tenure", "monthly charges (usd)"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("- just\n- a list\n", "(file)"),
        ("model: [unclosed\n", "(file)"),
        ("model: churn\nendpoint: churn-endpoint\n", "data"),
        (BASE.replace("churn-endpoint", "9-endpoint"), "endpoint"),
        (BASE + "colour: blue\n", "colour"),
        (BASE + "retrain: {debounce: ten minutes}\n", "retrain.debounce"),
        (BASE + "staging: {gates: [{kind: magic, metric: auc}]}\n", "staging.gates.0"),
        (
            BASE + "staging: {gates: [{kind: threshold, metric: auc}]}\n",
            "staging.gates.0.threshold.value",
        ),
        (BASE + "staging: {max_attempts: 0}\n", "staging.max_attempts"),
        (BASE + "approval: {required: true}\n", "approval.approvers"),
        (BASE + "approval: {on_timeout: maybe}\n", "approval.on_timeout"),
        (BASE + "canary: {steps: [50, 10]}\n", "canary.steps"),
        (BASE + "canary: {steps: [10, 100]}\n", "canary.steps"),
        (BASE + "canary: {min_samples_per_arm: 0}\n", "canary.min_samples_per_arm"),
        (
            BASE + "canary: {gates: [{metric: latency_ms, test: two_proportion}]}\n",
            "canary.gates.0.test",
        ),
        (BASE + "canary: {gates: [{metric: accuracy, test: quantile}]}\n", "canary.gates.0.test"),
        (BASE + "canary: {gates: [{metric: accuracy, margin: 0}]}\n", "canary.gates.0.margin"),
        (BASE + "canary: {gates: [{metric: accuracy, quantile: 0.99}]}\n", "canary.gates.0"),
        (BASE + "canary: {gates: [{metric: latency_ms, planning_rate: 0.9}]}\n", "canary.gates.0"),
        (
            BASE + "canary: {gates: [{metric: accuracy, planning_rate: 0.01, margin: 0.05}]}\n",
            "canary.gates.0",
        ),
        (
            BASE + "canary: {gates: [{metric: accuracy}, {metric: accuracy, margin: 0.05}]}\n",
            "canary.gates",
        ),
        (BASE + "canary: {power: 0.3}\n", "canary.power"),
        (BASE + "canary: {power: 1}\n", "canary.power"),
        (BASE + "canary: {spending: linear}\n", "canary.spending"),
        (BASE + "canary: {bake: 2h, max_step_duration: 1h}\n", "canary.max_step_duration"),
        (BASE + "canary: {gates: [{metric: error_rate, alpha: 0.7}]}\n", "canary.gates.0.alpha"),
        (BASE + "canary: {on_exhausted: shrug}\n", "canary.on_exhausted"),
        (BASE + "production_bake: soon\n", "production_bake"),
        (BASE + "on_newer_candidate: replace\n", "on_newer_candidate"),
        (BASE.replace("churn-data}", "churn-data, label_column: ''}"), "data.label_column"),
        (BASE.replace("churn-data}", "churn-data, label_column: ' y'}"), "data.label_column"),
        (BASE.replace("churn-data}", 'churn-data, label_column: "it\'s"}'), "data.label_column"),
        (BASE.replace("churn-data}", "churn-data, label_column: '*'}"), "data.label_column"),
        (BASE.replace("churn-data}", "churn-data, label_column: '-score'}"), "data.label_column"),
        (BASE.replace("churn-data}", "churn-data, feature_columns: []}"), "data.feature_columns"),
        (BASE.replace("churn-data}", "churn-data, feature_columns: x}"), "data.feature_columns"),
        (
            BASE.replace("churn-data}", "churn-data, feature_columns: [a, 'b,c']}"),
            "data.feature_columns.1",
        ),
        (
            BASE.replace("churn-data}", "churn-data, feature_columns: [a, b, a]}"),
            "data.feature_columns",
        ),
        (
            BASE.replace("churn-data}", "churn-data, label_column: y, feature_columns: [a, y]}"),
            "data.feature_columns",
        ),
        (BASE.replace("churn-data}", "churn-data, label: y}"), "data.label"),
    ],
)
def test_invalid_policy_names_the_field(text: str, field: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert raised.value.field == field
    assert str(path) in str(raised.value) and raised.value.reason
