"""Read a canary step's per-deployment metrics back from MLflow, as `LiveMetrics`.

Naming (shared with `evaluate_canary`, which writes them):

- experiment ``CANARY_EXPERIMENT`` (default ``retrain-orchestrator-canary``)
- one run per promotion, named ``promotion-{promotion_id}-canary`` (tag ``promotion_id``)
- one evaluation = metrics logged with ``step`` = the canary step index and ``timestamp`` =
  the window's end (epoch ms), so evaluations of one step (a bake extended after an
  inconclusive gate) stay apart:
  ``canary.window_start`` / ``canary.window_end`` (epoch seconds), and per deployment
  ``{deployment}.requests``, ``.errors``, ``.labeled``, ``.correct``, ``.error_rate``,
  ``.accuracy``, ``.auc``, ``.latency_p50_ms``, ``.latency_p95_ms`` (the last five only when
  defined; ``.auc`` is logged for people and dashboards, `ArmStats` does not carry it)
- the latency sample as the artifact ``canary/step-{step}/latency-{window_end_ms}.json``
  (``{deployment: [ms, ...]}``)

mlflow is imported lazily.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.metrics import ArmStats, LiveMetrics

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

CANARY_EXPERIMENT = "retrain-orchestrator-canary"
WINDOW_START = "canary.window_start"
WINDOW_END = "canary.window_end"
COUNTS = ("requests", "errors", "labeled", "correct")
# Windows are compared to the second: MLflow stores metric values as doubles.
WINDOW_TOLERANCE_S = 1.0


def run_name(promotion_id: str) -> str:
    return f"promotion-{promotion_id}-canary"


def metric_key(deployment: str, metric: str) -> str:
    return f"{deployment}.{metric}"


def window_ms(moment: datetime) -> int:
    """An aware datetime as epoch milliseconds (the metric timestamp of an evaluation)."""
    if moment.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware")
    return round(moment.timestamp() * 1000)


def latency_artifact(step: int, window_end_ms: int) -> str:
    return f"canary/step-{step}/latency-{window_end_ms}.json"


def _client(tracking: str | MlflowClient | None) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    if isinstance(tracking, MlflowClient):
        return tracking
    return MlflowClient(tracking_uri=tracking)


def find_runs(client: MlflowClient, promotion_id: str, experiment_name: str) -> list[Any]:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    name = run_name(promotion_id).replace("'", "\\'")
    return list(
        client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.run_name = '{name}'",
            max_results=50,
        )
    )


def read_live_metrics(
    tracking: str | MlflowClient | None,
    promotion_id: str,
    step: int,
    deployments: Iterable[str],
    window_start: datetime,
    window_end: datetime,
    *,
    experiment_name: str = CANARY_EXPERIMENT,
) -> LiveMetrics:
    """The latest evaluation of `step` whose window starts at `window_start` and ends no later
    than `window_end`, as LiveMetrics (its window is the evaluated one).

    No such evaluation, or a deployment without a ``.requests`` metric in it: that arm is
    absent, so the gate judges the step inconclusive rather than passing it.
    """
    client = _client(tracking)
    start_s = window_start.timestamp()
    end_ms = window_ms(window_end)
    best: tuple[int, Any] | None = None  # (window end ms, run)
    for run in find_runs(client, promotion_id, experiment_name):
        for entry in client.get_metric_history(run.info.run_id, WINDOW_START):
            if (
                entry.step == step
                and abs(entry.value - start_s) <= WINDOW_TOLERANCE_S
                and entry.timestamp <= end_ms
                and (best is None or entry.timestamp > best[0])
            ):
                best = (entry.timestamp, run)
    if best is None:
        return LiveMetrics(window_start=window_start, window_end=window_end)
    evaluated_ms, run = best
    run_id = run.info.run_id
    latencies = _read_latencies(client, run_id, step, evaluated_ms)
    arms: dict[str, ArmStats] = {}
    for deployment in deployments:
        values: dict[str, int] = {}
        for metric in COUNTS:
            for entry in client.get_metric_history(run_id, metric_key(deployment, metric)):
                if entry.step == step and entry.timestamp == evaluated_ms:
                    values[metric] = round(entry.value)
        if "requests" not in values:
            continue
        arms[deployment] = ArmStats(
            deployment=deployment,
            latency_ms=[float(x) for x in latencies.get(deployment, [])],
            **values,
        )
    return LiveMetrics(
        window_start=window_start,
        window_end=datetime.fromtimestamp(evaluated_ms / 1000, tz=UTC),
        arms=arms,
    )


def _read_latencies(client: MlflowClient, run_id: str, step: int, end_ms: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, latency_artifact(step, end_ms), tmp)
        except Exception:  # no sample logged (e.g. no successful request): an empty sample
            return {}
        return json.loads(Path(path).read_text())
