"""In Azure each endpoint's requests are read from its own data-collector folder: a
CANARY_RECORDS_URI with `{endpoint}` names it, so a later ring (whose deployment carries the
same name as the first ring's) is judged on its own requests only; without the placeholder a
ring cannot be told apart and its read fails (the gate then waits: never a pass). The real
adapter, the real fetcher on local folders, a real MLflow store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.mlflow_metrics import MlflowMetrics
from adapters.mlflow_registry import MlflowRegistry
from orchestrator.ports import ArmWindow
from tests.fakes import fake_settings

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def collector(folder: Path, endpoint: str, deployment: str, requests: int, errors: int) -> None:
    """`requests` scored by `deployment` on `endpoint`, `errors` of them failed, as the data
    collector writes them (its hour folders under the endpoint's)."""
    hour = folder / endpoint / deployment / "model_outputs" / "2025" / "01" / "01" / "00"
    hour.mkdir(parents=True)
    lines = []
    for index in range(requests):
        common = {
            "source": f"/subscriptions/s/endpoints/{endpoint}/deployments/{deployment}",
            "time": (T0 + timedelta(seconds=5 + index)).isoformat().replace("+00:00", "Z"),
            "correlationid": f"{endpoint}-{index}",
            "xrequestid": f"{endpoint}-{index}",
        }
        lines.append({"type": "azureml.inference.model_inputs", **common, "data": [{"x": 1}]})
        if index >= errors:  # the collector writes no output for a failed request
            lines.append({"type": "azureml.inference.model_outputs", **common, "data": [1]})
    (hour / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines))


def reader(tmp_path: Path, records_uri: str) -> MlflowMetrics:
    feedback = tmp_path / "feedback"
    feedback.mkdir(exist_ok=True)
    (feedback / "labels.csv").write_text("request_id,label\nbc-west-0,1\n")
    settings = fake_settings(
        AZUREML_SUBSCRIPTION_ID="00000000-0000-0000-0000-000000000000",
        AZUREML_RESOURCE_GROUP="rg",
        AZUREML_WORKSPACE="ws",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        CANARY_RECORDS_URI=records_uri,
        CANARY_FEEDBACK_URI=str(feedback),
    )
    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return MlflowMetrics(settings, registry, endpoint_of=lambda model: "bc-west")


def test_each_ring_is_read_from_its_own_collector_folder(tmp_path: Path) -> None:
    folder = tmp_path / "modelDataCollector"
    collector(folder, "bc-west", "bc-v2", requests=30, errors=0)
    collector(folder, "bc-north", "bc-v2", requests=20, errors=4)  # same deployment name
    metrics = reader(tmp_path, f"{folder}/{{endpoint}}")
    window = {"window_start": T0, "window_end": T0 + timedelta(minutes=5)}
    west = metrics.live("bc", "p-1", 1, [ArmWindow(deployment="bc-v2", **window)])
    north = metrics.live(
        "bc", "p-1", 2, [ArmWindow(deployment="bc-v2", endpoint="bc-north", **window)]
    )
    assert (west.arms["bc-v2"].requests, west.arms["bc-v2"].errors) == (30, 0)
    assert (north.arms["bc-v2"].requests, north.arms["bc-v2"].errors) == (20, 4)


def test_without_the_placeholder_a_ring_is_not_read_at_all(tmp_path: Path) -> None:
    folder = tmp_path / "modelDataCollector"
    collector(folder, "bc-west", "bc-v2", requests=30, errors=0)
    metrics = reader(tmp_path, str(folder / "bc-west"))
    window = {"window_start": T0, "window_end": T0 + timedelta(minutes=5)}
    own = metrics.live("bc", "p-1", 1, [ArmWindow(deployment="bc-v2", **window)])
    assert own.arms["bc-v2"].requests == 30
    with pytest.raises(RuntimeError, match="name every endpoint's with \\{endpoint\\}"):
        metrics.live("bc", "p-1", 2, [ArmWindow(deployment="bc-v2", endpoint="bc-north", **window)])
