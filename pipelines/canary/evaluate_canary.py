"""Canary evaluation component: per-deployment live metrics of one canary step -> MLflow.

Joins the recorded predictions of the step's window with the feedback (true labels) that has
arrived, computes per-deployment counts, error rate, latency percentiles, accuracy and (when
the outputs carry a positive-class score, see `positive_scores`) ROC AUC, and logs them under
the promotion's canary run (naming in `pipelines.canary.live_metrics`).

Two readers, one computation:

- local: the local endpoint's request log (``records.sqlite`` in its data dir; feedback in
  the same file);
- Azure: the data collector's JSONL (``model_inputs`` / ``model_outputs`` CloudEvents,
  joined on ``correlationid``) plus a feedback table (CSV or JSONL with request_id, label).

Run as the Azure ML command component in ``component.yml``, or ``python -m
pipelines.canary.evaluate_canary --help``. mlflow and scipy are imported lazily; pandas
and scikit-learn are not needed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.metrics import ArmStats, LiveMetrics
from pipelines.canary.live_metrics import (
    CANARY_EXPERIMENT,
    WINDOW_END,
    WINDOW_START,
    find_runs,
    latency_artifact,
    metric_key,
    read_live_metrics,
    run_name,
    window_ms,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_LATENCY_SAMPLE = 5000
RECORDS_FILE = "records.sqlite"  # endpoint_server.store.RECORDS_FILE


@dataclass(frozen=True)
class PredictionRecord:
    """One scored request as the evaluation sees it, whatever recorded it."""

    request_id: str
    deployment: str
    time: datetime  # aware, UTC
    status: int  # HTTP status; >= 500 is an error (the deployment failed the request)
    outputs: Any = None  # the predictions (decoded JSON), None when the request failed
    latency_ms: float | None = None  # None when the recorder does not measure it (Azure MDC)
    request_key: str | None = None
    mirrored: bool = False


# -- the computation (pure) ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# Keys of an output row (a dict) that hold the predicted class, and the positive-class score.
LABEL_KEYS = ("label", "prediction")
SCORE_KEYS = ("probability", "score")


def _predicted_class(prediction: Any) -> Any:
    if isinstance(prediction, dict):
        if len(prediction) == 1:
            return next(iter(prediction.values()))
        for key in LABEL_KEYS:
            if key in prediction:
                return prediction[key]
    return prediction


def _same(prediction: Any, label: Any) -> bool:
    prediction = _predicted_class(prediction)
    try:
        return math.isclose(float(prediction), float(label), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(prediction) == str(label)


def is_correct(outputs: Any, label: Any) -> bool:
    """A request is correct when every predicted row equals its label.

    `outputs` is the list of predictions (one per input row); `label` is one label (for a
    one-row request) or a list of labels of the same length.
    """
    predictions = outputs if isinstance(outputs, list) else [outputs]
    labels = label if isinstance(label, list) else [label]
    return len(predictions) == len(labels) and all(map(_same, predictions, labels))


def _number(value: Any) -> float | None:
    """A finite real number (JSON number or numeric string), else None. Bools are not scores."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _row_score(row: Any) -> float | None:
    if isinstance(row, dict):
        for key in SCORE_KEYS:
            if key in row:
                return _row_score(row[key]) if isinstance(row[key], list) else _number(row[key])
        return None
    if isinstance(row, list) and len(row) == 2:
        # A binary predict_proba row [P(negative), P(positive)]: scikit-learn orders the
        # columns by sorted class, so the second is the greater label's. Two numbers that are
        # not a probability pair (a two-output regression) are no score.
        negative, positive = _number(row[0]), _number(row[1])
        if negative is None or positive is None or min(negative, positive) < 0:
            return None
        return positive if math.isclose(negative + positive, 1.0, abs_tol=1e-6) else None
    return None  # a bare number is a predicted class, not a score


def positive_scores(outputs: Any) -> list[float] | None:
    """The positive-class score of every predicted row, or None when a row carries none.

    A row carries one as ``{"probability" | "score": p, ...}`` (a number, or a
    ``[P(negative), P(positive)]`` pair), or as a bare ``[P(negative), P(positive)]`` pair
    summing to 1 (a binary ``predict_proba`` row). The positive class is the greater of the
    two labels. Today's local endpoint serves ``pyfunc.predict`` of scikit-learn models, which
    records classes only: scores appear when a model's pyfunc returns them.
    """
    if outputs is None:
        return None
    # Always a list of rows: predict_proba of one row is [[p0, p1]], while [0, 1] is two
    # predicted classes (bare numbers, so no scores).
    rows = outputs if isinstance(outputs, list) else [outputs]
    scores = [_row_score(row) for row in rows]
    if not scores or any(score is None for score in scores):
        return None
    return [score for score in scores if score is not None]


def auc_of(scores: Sequence[float], labels: Sequence[Any]) -> float | None:
    """ROC AUC of positive-class scores against numeric labels of exactly two classes (the
    greater is positive); None when it is undefined (one class, a non-numeric label)."""
    numeric = [float(x) if isinstance(x, bool) else _number(x) for x in labels]
    if not scores or len(scores) != len(numeric) or any(x is None for x in numeric):
        return None
    classes = sorted(set(numeric))
    if len(classes) != 2:
        return None
    # AUC = Mann-Whitney U / (n+ * n-), from average ranks (a tie counts half). scipy, not
    # scikit-learn: the Functions app runs this in the gate check and ships without sklearn.
    from scipy.stats import rankdata

    positive = classes[1]
    ranks = rankdata(list(scores))
    positives = [rank for rank, label in zip(ranks, numeric, strict=True) if label == positive]
    n_pos, n_neg = len(positives), len(numeric) - len(positives)
    return float((sum(positives) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _sample(values: list[float], size: int) -> list[float]:
    """Every value when there are at most `size`; else `size` evenly spaced ones (in order)."""
    if len(values) <= size:
        return values
    return [values[(i * len(values)) // size] for i in range(size)]


def compute_arm_stats(
    records: Iterable[PredictionRecord],
    feedback: Mapping[str, Any],
    window_start: datetime,
    window_end: datetime,
    *,
    deployments: Iterable[str] = (),
    latency_sample: int = DEFAULT_LATENCY_SAMPLE,
) -> dict[str, ArmStats]:
    """Per-deployment stats of the requests with window_start <= time < window_end.

    - requests: every request routed (or mirrored) to the deployment in the window;
    - errors: those with status >= 500 (4xx are the caller's fault and not counted);
    - labeled / correct: successful requests whose request_id has a label in `feedback`
      (whenever the label arrived), and those whose predictions equal it;
    - latency_ms: latencies of the successful requests, in time order (evenly thinned to
      `latency_sample` values when there are more).

    `deployments` listed get an arm even with no request (requests=0).
    """
    counts: dict[str, dict[str, int]] = {name: {} for name in deployments}
    latencies: dict[str, list[tuple[datetime, float]]] = {name: [] for name in deployments}
    for record in records:
        if not window_start <= record.time < window_end:
            continue
        arm = counts.setdefault(record.deployment, {})
        latencies.setdefault(record.deployment, [])
        arm["requests"] = arm.get("requests", 0) + 1
        if record.status >= 500:
            arm["errors"] = arm.get("errors", 0) + 1
            continue
        if record.status >= 400:
            continue
        if record.latency_ms is not None:
            latencies[record.deployment].append((record.time, record.latency_ms))
        if record.request_id in feedback:
            arm["labeled"] = arm.get("labeled", 0) + 1
            if is_correct(record.outputs, feedback[record.request_id]):
                arm["correct"] = arm.get("correct", 0) + 1
    return {
        name: ArmStats(
            deployment=name,
            latency_ms=_sample(
                [ms for _, ms in sorted(latencies[name], key=lambda item: item[0])],
                latency_sample,
            ),
            **arm,
        )
        for name, arm in sorted(counts.items())
    }


def compute_arm_auc(
    records: Iterable[PredictionRecord],
    feedback: Mapping[str, Any],
    window_start: datetime,
    window_end: datetime,
) -> dict[str, float]:
    """Per-deployment ROC AUC over the labeled rows, for the arms where it is defined.

    The requests are those `compute_arm_stats` counts as labeled (successful, in the window,
    with a label). An arm gets an AUC only when every one of them carries a positive-class
    score for each of its rows (`positive_scores`) and the labels hold exactly two numeric
    classes; an arm with any labeled request without scores gets none rather than an AUC of a
    subset.
    """
    scores: dict[str, list[float]] = {}
    labels: dict[str, list[Any]] = {}
    unscored: set[str] = set()
    for record in records:
        if not window_start <= record.time < window_end or record.status >= 400:
            continue
        if record.request_id not in feedback:
            continue
        label = feedback[record.request_id]
        row_labels = label if isinstance(label, list) else [label]
        row_scores = positive_scores(record.outputs)
        if row_scores is None or len(row_scores) != len(row_labels):
            unscored.add(record.deployment)
            continue
        scores.setdefault(record.deployment, []).extend(row_scores)
        labels.setdefault(record.deployment, []).extend(row_labels)
    aucs = {
        name: auc_of(scores[name], labels[name]) for name in sorted(scores) if name not in unscored
    }
    return {name: auc for name, auc in aucs.items() if auc is not None}


def arm_metrics(arm: ArmStats, auc: float | None = None) -> dict[str, float]:
    """The metrics logged for one arm (undefined ones left out); `auc` from compute_arm_auc."""
    metrics: dict[str, float] = {
        "requests": arm.requests,
        "errors": arm.errors,
        "labeled": arm.labeled,
        "correct": arm.correct,
    }
    if arm.error_rate is not None:
        metrics["error_rate"] = arm.error_rate
    if arm.accuracy is not None:
        metrics["accuracy"] = arm.accuracy
    if auc is not None:
        metrics["auc"] = auc
    if arm.latency_ms:
        metrics["latency_p50_ms"] = percentile(arm.latency_ms, 50)
        metrics["latency_p95_ms"] = percentile(arm.latency_ms, 95)
    return metrics


# -- readers ------------------------------------------------------------------------------------


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _sqlite_path(path: Path | str) -> Path:
    path = Path(path)
    return path / RECORDS_FILE if path.is_dir() else path


def read_local_records(
    path: Path | str, window_start: datetime, window_end: datetime
) -> list[PredictionRecord]:
    """The local endpoint's records in the window (`path`: its data dir or records.sqlite)."""
    conn = sqlite3.connect(f"file:{_sqlite_path(path)}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT request_id, deployment, ts, status, outputs, latency_ms, request_key, mirrored "
            "FROM records WHERE ts >= ? AND ts < ? ORDER BY ts",
            (window_start.timestamp(), window_end.timestamp()),
        ).fetchall()
    finally:
        conn.close()
    return [
        PredictionRecord(
            request_id=row[0],
            deployment=row[1],
            time=_utc(row[2]),
            status=int(row[3]),
            outputs=None if row[4] is None else json.loads(row[4]),
            latency_ms=row[5],
            request_key=row[6],
            mirrored=bool(row[7]),
        )
        for row in rows
    ]


def read_local_feedback(path: Path | str) -> dict[str, Any]:
    """request_id -> label from the local endpoint's feedback table."""
    conn = sqlite3.connect(f"file:{_sqlite_path(path)}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT request_id, label FROM feedback").fetchall()
    finally:
        conn.close()
    return {request_id: json.loads(label) for request_id, label in rows}


_DEPLOYMENT_IN_SOURCE = re.compile(r"/deployments/([^/]+)")
_HOUR_FOLDER = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})/")


def collector_files_in(
    window_start: datetime, window_end: datetime, margin: timedelta = timedelta(hours=1)
) -> Callable[[str], bool]:
    """Which data collector files (paths below the records folder) can hold the window's
    requests: the JSONL of the ``yyyy/MM/dd/HH`` folders from an hour (`margin`) before the
    window to an hour after it (an output may land in the next hour's folder). The collector
    keeps every hour since the deployment started, so the gate fetches only these. A JSONL
    file outside that layout is kept (it cannot be told apart)."""
    low = (window_start - margin).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    high = (window_end + margin).astimezone(UTC)

    def include(path: str) -> bool:
        if not path.endswith(".jsonl"):
            return False
        match = _HOUR_FOLDER.search(path)
        if match is None:
            return True
        try:
            hour = datetime(*(int(part) for part in match.groups()), tzinfo=UTC)
        except ValueError:  # digits that are no date (a month 13): not the collector's
            return True
        return low <= hour <= high

    return include


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _mdc_outputs(data: Any) -> Any:
    """Collected model outputs as a list of predictions (one-column rows unwrapped)."""
    rows = data if isinstance(data, list) else [data]
    return [
        next(iter(row.values())) if isinstance(row, dict) and len(row) == 1 else row for row in rows
    ]


def read_data_collector(
    folder: Path | str, window_start: datetime, window_end: datetime
) -> list[PredictionRecord]:
    """Azure ML data collector output (``model_inputs``/``model_outputs`` JSONL, any depth).

    Inputs and outputs are joined on ``correlationid``; the deployment comes from the
    event's ``source`` (or the ``.../{deployment}/{collection}/...`` folder). An input with no
    output is a failed request (status 500). The request id is ``xrequestid`` when present
    (the ``x-request-id`` the caller got back; feedback is keyed by it), else the correlation
    id. The collector records no latency, so ``latency_ms`` is None.
    """
    inputs: dict[str, tuple[datetime, str, str]] = {}
    outputs: dict[str, Any] = {}
    for file in sorted(Path(folder).rglob("*.jsonl")):
        parts = file.parts
        for line in file.read_text().splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            kind = str(event.get("type", ""))
            correlation = str(event.get("correlationid") or event.get("id"))
            if kind.endswith("model_outputs"):
                outputs[correlation] = _mdc_outputs(event.get("data"))
            elif kind.endswith("model_inputs"):
                match = _DEPLOYMENT_IN_SOURCE.search(str(event.get("source", "")))
                if match:
                    deployment = match[1]
                elif "model_inputs" in parts:
                    deployment = parts[parts.index("model_inputs") - 1]
                else:
                    continue
                request_id = str(event.get("xrequestid") or correlation)
                inputs[correlation] = (_parse_time(event["time"]), deployment, request_id)
    records = []
    for correlation, (moment, deployment, request_id) in inputs.items():
        if not window_start <= moment < window_end:
            continue
        output = outputs.get(correlation)
        records.append(
            PredictionRecord(
                request_id=request_id,
                deployment=deployment,
                time=moment,
                status=200 if output is not None else 500,
                outputs=output,
            )
        )
    return sorted(records, key=lambda r: r.time)


def read_feedback_table(path: Path | str) -> dict[str, Any]:
    """request_id -> label from CSV or JSONL files (a file, or every such file in a folder).

    Columns/fields: ``request_id`` and ``label``. CSV labels are strings; the comparison with
    predictions is numeric when both sides parse as numbers.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix in (".csv", ".jsonl", ".json"))
    labels: dict[str, Any] = {}
    for file in [path] if path.is_file() else files:
        if file.suffix == ".csv":
            with file.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    labels[str(row["request_id"])] = row["label"]
        else:
            for line in file.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    labels[str(row["request_id"])] = row["label"]
    return labels


# -- logging to MLflow --------------------------------------------------------------------------


def log_arm_stats(
    tracking: str | MlflowClient | None,
    promotion_id: str,
    step: int,
    arms: Mapping[str, ArmStats],
    window_start: datetime,
    window_end: datetime,
    *,
    auc: Mapping[str, float] | None = None,
    experiment_name: str = CANARY_EXPERIMENT,
) -> str:
    """Log one evaluation under the promotion's canary run (created on first use); its id.

    `auc` (from compute_arm_auc) adds ``{deployment}.auc`` for the arms it names.
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = tracking if isinstance(tracking, MlflowClient) else MlflowClient(tracking)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    )
    runs = find_runs(client, promotion_id, experiment_name)
    if runs:
        run_id = runs[0].info.run_id
    else:
        run_id = client.create_run(
            experiment_id,
            run_name=run_name(promotion_id),
            tags={"promotion_id": promotion_id, "kind": "canary-evaluation"},
        ).info.run_id
    at = window_ms(window_end)
    metrics = [
        Metric(WINDOW_START, window_start.timestamp(), at, step),
        Metric(WINDOW_END, window_end.timestamp(), at, step),
    ]
    for deployment, arm in arms.items():
        metrics += [
            Metric(metric_key(deployment, name), float(value), at, step)
            for name, value in arm_metrics(arm, (auc or {}).get(deployment)).items()
        ]
    client.log_batch(run_id, metrics=metrics)
    client.log_dict(
        run_id,
        {deployment: arm.latency_ms for deployment, arm in arms.items()},
        latency_artifact(step, at),
    )
    client.set_terminated(run_id)
    return run_id


def evaluate(
    records: Iterable[PredictionRecord],
    feedback: Mapping[str, Any],
    *,
    tracking: str | MlflowClient | None,
    promotion_id: str,
    step: int,
    window_start: datetime,
    window_end: datetime,
    deployments: Iterable[str] = (),
    experiment_name: str = CANARY_EXPERIMENT,
) -> tuple[dict[str, ArmStats], dict[str, float]]:
    """compute_arm_stats and compute_arm_auc, then log_arm_stats; the arms, and the AUCs
    (ArmStats, in orchestrator.metrics, has no AUC field: they travel beside the arms)."""
    records = list(records)  # read twice
    arms = compute_arm_stats(records, feedback, window_start, window_end, deployments=deployments)
    aucs = compute_arm_auc(records, feedback, window_start, window_end)
    log_arm_stats(
        tracking,
        promotion_id,
        step,
        arms,
        window_start,
        window_end,
        auc=aucs,
        experiment_name=experiment_name,
    )
    return arms, aucs


def collect_local_live_metrics(
    data_dir: Path | str,
    tracking: str | MlflowClient | None,
    promotion_id: str,
    step: int,
    deployments: Sequence[str],
    window_start: datetime,
    window_end: datetime,
    *,
    experiment_name: str = CANARY_EXPERIMENT,
) -> LiveMetrics:
    """Evaluate the local endpoint's request log, log to MLflow, and read it back as the gate
    would (`read_live_metrics`). Flush the server's log first (`LocalEndpoint.flush_records`).
    """
    evaluate(
        read_local_records(data_dir, window_start, window_end),
        read_local_feedback(data_dir),
        tracking=tracking,
        promotion_id=promotion_id,
        step=step,
        window_start=window_start,
        window_end=window_end,
        deployments=deployments,
        experiment_name=experiment_name,
    )
    return read_live_metrics(
        tracking,
        promotion_id,
        step,
        deployments,
        window_start,
        window_end,
        experiment_name=experiment_name,
    )


# -- the component's entry point ----------------------------------------------------------------


def _aware(value: str) -> datetime:
    moment = _parse_time(value)
    return moment.astimezone(UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.canary.evaluate_canary", description=__doc__
    )
    parser.add_argument("--source", choices=["local_sqlite", "data_collector"], required=True)
    parser.add_argument(
        "--records",
        required=True,
        help="local: the endpoint's data dir or records.sqlite; Azure: data collector folder",
    )
    parser.add_argument("--feedback", default=None, help="Azure: CSV/JSONL feedback file or dir")
    parser.add_argument("--promotion-id", required=True)
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--window-start", type=_aware, required=True, help="ISO 8601")
    parser.add_argument("--window-end", type=_aware, required=True, help="ISO 8601")
    parser.add_argument("--deployments", default="", help="comma-separated; always reported")
    parser.add_argument("--experiment-name", default=CANARY_EXPERIMENT)
    parser.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI (set in Azure ML jobs)"
    )
    parser.add_argument("--output", default=None, help="a folder for summary.json")
    args = parser.parse_args(argv)

    if args.source == "local_sqlite":
        records = read_local_records(args.records, args.window_start, args.window_end)
        feedback = read_local_feedback(args.records)
        if args.feedback:
            feedback.update(read_feedback_table(args.feedback))
    else:
        records = read_data_collector(args.records, args.window_start, args.window_end)
        feedback = read_feedback_table(args.feedback) if args.feedback else {}
    deployments = [name for name in args.deployments.split(",") if name.strip()]
    arms, aucs = evaluate(
        records,
        feedback,
        tracking=args.tracking_uri,
        promotion_id=args.promotion_id,
        step=args.step,
        window_start=args.window_start,
        window_end=args.window_end,
        deployments=[name.strip() for name in deployments],
        experiment_name=args.experiment_name,
    )
    summary = {
        "promotion_id": args.promotion_id,
        "step": args.step,
        "window_start": args.window_start.isoformat(),
        "window_end": args.window_end.isoformat(),
        "arms": {name: arm_metrics(arm, aucs.get(name)) for name, arm in arms.items()},
    }
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
