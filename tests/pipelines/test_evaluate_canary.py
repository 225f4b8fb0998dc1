"""Canary evaluation: hand-computed metrics, both readers, MLflow round trip, the component."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.metrics import ArmStats
from endpoint_server.store import Record, RecordStore
from pipelines.canary.evaluate_canary import (
    PredictionRecord,
    arm_metrics,
    collector_files_in,
    compute_arm_auc,
    compute_arm_stats,
    log_arm_stats,
    main,
    percentile,
    positive_scores,
    read_data_collector,
    read_feedback_table,
)
from pipelines.canary.live_metrics import read_live_metrics

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rec(rid: str, dep: str, t: float, status: int, out=None, ms=None, mirrored=False):
    return PredictionRecord(rid, dep, at(t), status, out, ms, mirrored=mirrored)


RECORDS = [
    rec("r1", "prod-v1", 1, 200, [1], 10.0),
    rec("r2", "prod-v1", 2, 200, [0], 20.0),
    rec("r3", "prod-v1", 3, 500, None, 5.0),  # an error: counted, no latency, no label
    rec("r4", "prod-v1", 4, 200, [1], 40.0),  # no label arrives
    rec("r5", "prod-v1", 5, 400, None, 1.0),  # the caller's fault: not an error
    rec("c1", "canary-v2", 6, 200, [1], 30.0),
    rec("c2", "canary-v2", 7, 200, [0], 50.0),
    rec("r1", "canary-v2", 8, 200, [0], 70.0, mirrored=True),  # r1's shadow copy
    rec("c3", "canary-v2", 600, 200, [1], 1.0),  # at window_end: outside
    rec("c4", "canary-v2", -1, 200, [1], 1.0),  # before window_start: outside
]
FEEDBACK = {"r1": 1, "r2": 1, "r3": 0, "c1": "1", "c2": 0, "c3": 1, "c4": 1}

# Outputs that carry a positive-class score, in the shapes a pyfunc can return: rows
# {"label", "probability"} (a DataFrame's records) and [P(0), P(1)] pairs (predict_proba).
SCORED = [
    rec("s1", "prod-v1", 1, 200, [{"label": 1, "probability": 0.9}], 10.0),
    rec("s2", "prod-v1", 2, 200, [[0.6, 0.4]], 10.0),
    rec("s3", "prod-v1", 3, 200, [[0.7, 0.3], [0.4, 0.6]], 10.0),  # two rows, two labels
    rec("s4", "prod-v1", 4, 200, [{"label": 0, "probability": 0.4}], 10.0),
    rec("s5", "prod-v1", 5, 500, None, 10.0),  # failed: no row, whatever its label
    rec("s6", "prod-v1", 6, 200, [[0.99, 0.01]], 10.0),  # no label arrives: not counted
    rec("s7", "prod-v1", 700, 200, [[0.0, 1.0]], 10.0),  # outside the window
    rec("o1", "one-class-v2", 1, 200, [[0.2, 0.8]], 10.0),
    rec("o2", "one-class-v2", 2, 200, [[0.3, 0.7]], 10.0),
    rec("m1", "mixed-v3", 1, 200, [[0.2, 0.8]], 10.0),
    rec("m2", "mixed-v3", 2, 200, [0], 10.0),  # a class only: this arm has no AUC at all
]
SCORED_FEEDBACK = {
    "s1": 1, "s2": "1", "s3": [0, 0], "s4": 0, "s5": 1, "s7": 0,
    "o1": 1, "o2": 1, "m1": 1, "m2": 0,
}  # fmt: skip


def test_stats_equal_a_hand_computation() -> None:
    arms = compute_arm_stats(
        RECORDS, FEEDBACK, T0, T1, deployments=["prod-v1", "canary-v2", "idle-v3"]
    )
    assert arms["prod-v1"] == ArmStats(
        deployment="prod-v1", requests=5, errors=1, labeled=2, correct=1, latency_ms=[10, 20, 40]
    )
    assert arms["canary-v2"] == ArmStats(
        deployment="canary-v2", requests=3, errors=0, labeled=3, correct=2, latency_ms=[30, 50, 70]
    )
    assert arms["idle-v3"] == ArmStats(deployment="idle-v3")
    # p50 of [10, 20, 40] is 20; p95 sits at rank 1.9: 20 + 0.9 * (40 - 20) = 38.
    assert arm_metrics(arms["prod-v1"]) == {
        "requests": 5,
        "errors": 1,
        "labeled": 2,
        "correct": 1,
        "error_rate": 0.2,
        "accuracy": 0.5,
        "latency_p50_ms": 20.0,
        "latency_p95_ms": pytest.approx(38.0),
    }
    assert arm_metrics(arms["canary-v2"])["accuracy"] == pytest.approx(2 / 3)
    assert arm_metrics(arms["canary-v2"])["latency_p95_ms"] == pytest.approx(68.0)
    assert arm_metrics(arms["idle-v3"]) == {"requests": 0, "errors": 0, "labeled": 0, "correct": 0}
    # Those outputs are predicted classes, no scores: no AUC for any arm.
    assert compute_arm_auc(RECORDS, FEEDBACK, T0, T1) == {}


def test_auc_equals_a_count_of_concordant_pairs() -> None:
    # prod-v1's labeled rows, as (positive-class score, label):
    #   s1 (0.9, 1), s2 (0.4, 1), s3 (0.3, 0) and (0.6, 0), s4 (0.4, 0).
    # Positives {0.9, 0.4} x negatives {0.3, 0.6, 0.4}: 6 pairs. 0.9 beats all three (3);
    # 0.4 beats 0.3 (1), loses to 0.6 (0), ties 0.4 (1/2). AUC = 4.5 / 6 = 0.75.
    aucs = compute_arm_auc(SCORED, SCORED_FEEDBACK, T0, T1)
    assert aucs == {"prod-v1": pytest.approx(0.75)}  # one-class-v2, mixed-v3: absent
    arms = compute_arm_stats(SCORED, SCORED_FEEDBACK, T0, T1)
    assert arm_metrics(arms["prod-v1"], aucs.get("prod-v1"))["auc"] == pytest.approx(0.75)
    assert "auc" not in arm_metrics(arms["one-class-v2"], aucs.get("one-class-v2"))
    # Accuracy reads a dict row's "label" (s1, s4 right). A bare probability pair names no
    # class, so s2 and s3 cannot count as correct: a known limit, accuracy is not AUC's job.
    assert (arms["prod-v1"].labeled, arms["prod-v1"].correct) == (4, 2)


def test_what_counts_as_a_score() -> None:
    assert positive_scores([[0.25, 0.75], {"score": -1.5}, {"probability": [0.1, 0.9]}]) == [
        0.75,
        -1.5,
        0.9,
    ]
    assert positive_scores([1, 0]) is None  # two predicted classes, not a probability pair
    assert positive_scores([[3.0, 4.0]]) is None  # two regression outputs: they sum to 7
    assert positive_scores([{"label": 1}]) is None
    assert positive_scores([[0.2, 0.8], 1]) is None  # every row, or none
    assert positive_scores(None) is None
    # Labels that are not two numeric classes give no AUC either.
    scored = [rec("a", "d-v1", 1, 200, [[0.2, 0.8]]), rec("b", "d-v1", 2, 200, [[0.9, 0.1]])]
    assert compute_arm_auc(scored, {"a": "yes", "b": "no"}, T0, T1) == {}
    assert compute_arm_auc(scored, {"a": 2, "b": 1}, T0, T1) == {"d-v1": 1.0}
    assert compute_arm_auc(scored, {"a": True, "b": False}, T0, T1) == {"d-v1": 1.0}


def test_auc_of_a_real_classifier_matches_scikit_learn_on_the_holdout() -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from endpoint_server.app import to_json

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    model = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    # One request per holdout row, recorded as the local endpoint records a predict_proba
    # pyfunc's answer (to_json of the array).
    records = [
        rec(f"h{i}", "bc-v1", 1 + i * 0.01, 200, to_json(model.predict_proba(x_test[i : i + 1])))
        for i in range(len(x_test))
    ]
    feedback = {f"h{i}": int(label) for i, label in enumerate(y_test)}
    [auc] = compute_arm_auc(records, feedback, T0, T1).values()
    assert auc == pytest.approx(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    assert 0.9 < auc < 1.0  # a real model, neither a coin nor a made-up 1.0


def test_percentile_and_the_latency_sample_cap() -> None:
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    many = [rec(f"x{i}", "prod-v1", i * 0.01, 200, [1], float(i)) for i in range(1000)]
    arm = compute_arm_stats(many, {}, T0, T1, latency_sample=100)["prod-v1"]
    assert arm.requests == 1000 and arm.latency_ms == [float(i * 10) for i in range(100)]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("canary-mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("retrain-orchestrator-canary", artifact_location=(root / "a").as_uri())
    return uri


def test_metrics_round_trip_through_mlflow(tracking_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    arms = compute_arm_stats(RECORDS, FEEDBACK, T0, T1, deployments=["prod-v1", "canary-v2"])
    run_id = log_arm_stats(tracking_uri, "p-round", 2, arms, T0, T1)

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "promotion-p-round-canary"
    assert run.data.tags["promotion_id"] == "p-round"
    [p95] = client.get_metric_history(run_id, "prod-v1.latency_p95_ms")
    assert (p95.step, p95.value) == (2, pytest.approx(38.0))
    assert {m.key for m in client.get_metric_history(run_id, "canary-v2.accuracy")} == {
        "canary-v2.accuracy"
    }
    assert client.get_metric_history(run_id, "prod-v1.auc") == []  # no scores: no AUC

    scored = compute_arm_stats(SCORED, SCORED_FEEDBACK, T0, T1)
    aucs = compute_arm_auc(SCORED, SCORED_FEEDBACK, T0, T1)
    scored_run = log_arm_stats(tracking_uri, "p-auc", 1, scored, T0, T1, auc=aucs)
    [auc] = client.get_metric_history(scored_run, "prod-v1.auc")
    assert (auc.step, auc.value) == (1, pytest.approx(0.75))
    assert client.get_metric_history(scored_run, "one-class-v2.auc") == []
    assert client.get_metric_history(scored_run, "one-class-v2.requests") != []

    live = read_live_metrics(tracking_uri, "p-round", 2, ["prod-v1", "canary-v2"], T0, T1)
    assert live.arms == arms
    assert (live.window_start, live.window_end) == (T0, T1)


def test_missing_evaluations_leave_arms_absent(tracking_uri: str) -> None:
    prod_only = [r for r in RECORDS if r.deployment == "prod-v1"]
    arms = compute_arm_stats(prod_only, FEEDBACK, T0, T1)
    log_arm_stats(tracking_uri, "p-missing", 0, arms, T0, T1)
    ask = ["prod-v1", "canary-v2"]
    assert read_live_metrics(tracking_uri, "p-other", 0, ask, T0, T1).arms == {}
    assert read_live_metrics(tracking_uri, "p-missing", 1, ask, T0, T1).arms == {}
    assert (
        read_live_metrics(tracking_uri, "p-missing", 0, ask, T0 + timedelta(minutes=1), T1).arms
        == {}
    )
    # an evaluation that ends after the window asked for is not used
    assert (
        read_live_metrics(tracking_uri, "p-missing", 0, ask, T0, T1 - timedelta(seconds=5)).arms
        == {}
    )
    live = read_live_metrics(tracking_uri, "p-missing", 0, ask, T0, T1)
    assert set(live.arms) == {"prod-v1"}  # canary-v2 was not evaluated: absent
    assert (
        read_live_metrics(tracking_uri, "p-missing", 0, ask, T0, T1, experiment_name="no").arms
        == {}
    )


def test_an_extended_bake_reads_the_latest_evaluation_of_the_step(tracking_uri: str) -> None:
    later = T1 + timedelta(minutes=5)
    first = compute_arm_stats(RECORDS[:2], FEEDBACK, T0, T1)
    second = compute_arm_stats(RECORDS[:4], FEEDBACK, T0, later)
    log_arm_stats(tracking_uri, "p-ext", 1, first, T0, T1)
    log_arm_stats(tracking_uri, "p-ext", 1, second, T0, later)
    assert read_live_metrics(tracking_uri, "p-ext", 1, ["prod-v1"], T0, later).arms == second
    between = read_live_metrics(
        tracking_uri, "p-ext", 1, ["prod-v1"], T0, later - timedelta(minutes=1)
    )
    assert between.arms == first and between.window_end == T1


def _cloud_event(kind: str, cid: str, dep: str, when: str, data) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": cid,
            "source": (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
                f"/workspaces/ws/onlineEndpoints/ep/deployments/{dep}"
            ),
            "type": f"azureml.inference.{kind}",
            "datacontenttype": "application/json",
            "time": when,
            "data": data,
            "correlationid": cid,
            "xrequestid": f"req-{cid}",
            "modelversion": "default",
        }
    )


def test_the_data_collector_reader_joins_inputs_outputs_and_feedback(tmp_path: Path) -> None:
    root = tmp_path / "modelDataCollector" / "ep"
    rows = [{"f1": 1.0, "f2": 2.0}]
    files = {
        ("prod-v1", "model_inputs"): [
            _cloud_event("model_inputs", "a", "prod-v1", "2026-03-01T12:00:05Z", rows),
            _cloud_event("model_inputs", "b", "prod-v1", "2026-03-01T12:00:06Z", rows),
            _cloud_event("model_inputs", "z", "prod-v1", "2026-03-01T12:30:00Z", rows),
        ],
        ("prod-v1", "model_outputs"): [
            _cloud_event("model_outputs", "a", "prod-v1", "2026-03-01T12:00:05Z", [{"0": 1}]),
        ],  # b has no output: it failed
        ("canary-v2", "model_inputs"): [
            _cloud_event("model_inputs", "c", "canary-v2", "2026-03-01T12:00:07Z", rows),
        ],
        ("canary-v2", "model_outputs"): [
            _cloud_event("model_outputs", "c", "canary-v2", "2026-03-01T12:00:07Z", [0]),
        ],
    }
    for (dep, collection), lines in files.items():
        folder = root / dep / collection / "2026" / "03" / "01" / "12"
        folder.mkdir(parents=True)
        (folder / "part.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "labels.csv").write_text("request_id,label\nreq-a,1\nreq-c,1\n")

    records = read_data_collector(tmp_path / "modelDataCollector", T0, T1)
    assert [(r.request_id, r.deployment, r.status, r.outputs) for r in records] == [
        ("req-a", "prod-v1", 200, [1]),
        ("req-b", "prod-v1", 500, None),
        ("req-c", "canary-v2", 200, [0]),
    ]
    feedback = read_feedback_table(tmp_path / "feedback")
    arms = compute_arm_stats(records, feedback, T0, T1)
    assert arms["prod-v1"] == ArmStats(
        deployment="prod-v1", requests=2, errors=1, labeled=1, correct=1
    )
    assert arms["canary-v2"] == ArmStats(deployment="canary-v2", requests=1, labeled=1, correct=0)


def _write_request_log(
    folder: Path, records: list[PredictionRecord], feedback: dict[str, Any]
) -> None:
    store = RecordStore(folder / "records.sqlite")
    for r in records:
        store.record(
            Record(
                r.request_id,
                None,
                r.deployment,
                None,
                r.time.timestamp(),
                r.latency_ms,
                {"input_data": []},
                r.outputs,
                r.status,
                None,
                r.mirrored,
            )
        )
    for rid, label in feedback.items():
        store.feedback(rid, label, T1.timestamp())
    store.close()


def test_only_the_collector_hour_folders_around_the_window_are_fetched() -> None:
    # Window 10:20-10:50 UTC: the 09:00 (an hour before) through 11:00 (an hour after) folders.
    include = collector_files_in(
        datetime(2026, 3, 2, 10, 20, tzinfo=UTC), datetime(2026, 3, 2, 10, 50, tzinfo=UTC)
    )
    base = "churn-v2/model_inputs/2026/03/02"
    assert [hour for hour in range(24) if include(f"{base}/{hour:02d}/part-0.jsonl")] == [
        9,
        10,
        11,
    ]
    assert not include("churn-v2/model_inputs/2026/03/01/10/part-0.jsonl")  # the day before
    assert not include(f"{base}/10/_meta.json")  # not collector JSONL
    assert include("exported/requests.jsonl")  # another layout: kept, it cannot be told
    assert include("churn-v2/model_outputs/2026/13/02/10/part-0.jsonl")  # no date: kept


def test_main_on_a_local_request_log(tmp_path: Path, tracking_uri: str) -> None:
    _write_request_log(tmp_path, RECORDS, FEEDBACK)
    out = tmp_path / "out"
    assert main([
        "--source", "local_sqlite", "--records", str(tmp_path),
        "--promotion-id", "p-cli", "--step", "3",
        "--window-start", T0.isoformat(), "--window-end", "2026-03-01T12:10:00Z",
        "--deployments", "prod-v1,canary-v2", "--tracking-uri", tracking_uri,
        "--output", str(out),
    ]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"]["prod-v1"]["latency_p95_ms"] == pytest.approx(38.0)
    assert "auc" not in summary["arms"]["prod-v1"]
    live = read_live_metrics(tracking_uri, "p-cli", 3, ["prod-v1", "canary-v2"], T0, T1)
    assert live.arms == compute_arm_stats(RECORDS, FEEDBACK, T0, T1)


def test_the_component_yaml_loads_with_the_azure_ml_sdk() -> None:
    from azure.ai.ml import load_component

    path = Path(__file__).resolve().parents[2] / "pipelines" / "canary" / "component.yml"
    component = load_component(source=path)
    assert component.name == "canary_evaluation"
    assert set(component.inputs) >= {"records", "feedback", "promotion_id", "step", "window_start"}
    assert component.command.startswith("python -m pipelines.canary.evaluate_canary")
    assert (path.parent / component.code / "pipelines" / "canary" / "evaluate_canary.py").exists()


def test_main_logs_auc_from_scored_outputs_in_the_request_log(
    tmp_path: Path, tracking_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    _write_request_log(tmp_path, SCORED, SCORED_FEEDBACK)  # outputs survive the JSON column
    out = tmp_path / "out"
    assert main([
        "--source", "local_sqlite", "--records", str(tmp_path),
        "--promotion-id", "p-cli-auc", "--step", "0",
        "--window-start", T0.isoformat(), "--window-end", T1.isoformat(),
        "--tracking-uri", tracking_uri, "--output", str(out),
    ]) == 0  # fmt: skip
    arms = json.loads((out / "summary.json").read_text())["arms"]
    assert arms["prod-v1"]["auc"] == pytest.approx(0.75)
    assert "auc" not in arms["one-class-v2"] and "auc" not in arms["mixed-v3"]
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("retrain-orchestrator-canary").experiment_id],
        filter_string="attributes.run_name = 'promotion-p-cli-auc-canary'",
    )
    assert run.data.metrics["prod-v1.auc"] == pytest.approx(0.75)
    assert "mixed-v3.auc" not in run.data.metrics
