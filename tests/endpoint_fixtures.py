"""Fixtures for the local endpoint's tests (tests/adapters/test_local_endpoint.py and
tests/endpoint_server/): a real MLflow SQLite registry with two tiny scikit-learn models, and
a real local endpoint server on it. tests/conftest.py exports `registry` and `server`.
`two_models` (imported by the tests that use it) registers two models on two scikit-learn
datasets, breast-cancer (binary) and wine (three classes), two versions each."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mlflow_store import mlflow_store

MODEL = "bc-classifier"


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    model: str
    features: Any  # a pandas DataFrame of breast-cancer rows (the holdout)
    labels: Any


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two versions of one registered model (two logistic regressions, v2 heavily regularized)."""

    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with mlflow_store(tracking_uri):  # process-wide settings put back as they were
        return _register_two_versions(tracking_uri, root)


def _register_two_versions(tracking_uri: str, root: Path) -> Registry:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    experiment_id = mlflow.create_experiment(
        "endpoint-tests", artifact_location=(root / "art").as_uri()
    )
    data = load_breast_cancer(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=0
    )
    for estimator in (LogisticRegression(max_iter=5000), LogisticRegression(C=1e-5, max_iter=5000)):
        estimator.fit(x_train, y_train)
        with mlflow.start_run(experiment_id=experiment_id):
            mlflow.sklearn.log_model(
                estimator,
                name="model",
                signature=infer_signature(x_test, estimator.predict(x_test)),
                registered_model_name=MODEL,
            )
    return Registry(
        tracking_uri, MODEL, x_test.reset_index(drop=True), y_test.reset_index(drop=True)
    )


@dataclass(frozen=True)
class TwoModels:
    """Registered `breast-cancer` and `wine`, versions 1 and 2 each, and a holdout of each."""

    tracking_uri: str
    features: dict[str, Any]  # model -> pandas DataFrame of holdout rows
    labels: dict[str, Any]  # model -> pandas Series

    def payload(self, model: str, row: int) -> dict[str, Any]:
        """One holdout row of `model`'s data as a scoring payload."""
        frame = self.features[model].iloc[[row % len(self.features[model])]]
        return {"input_data": {"columns": list(frame.columns), "data": frame.values.tolist()}}


@pytest.fixture(scope="session")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> TwoModels:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    root = tmp_path_factory.mktemp("two-models")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    features: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    with mlflow_store(tracking_uri):
        experiment_id = mlflow.create_experiment(
            "two-models", artifact_location=(root / "art").as_uri()
        )
        for model, load in (("breast-cancer", load_breast_cancer), ("wine", load_wine)):
            data = load(as_frame=True)
            x_train, x_test, y_train, y_test = train_test_split(
                data.data, data.target, test_size=0.3, random_state=0
            )
            for c in (1.0, 0.1):  # v1, v2
                estimator = LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train)
                with mlflow.start_run(experiment_id=experiment_id):
                    mlflow.sklearn.log_model(
                        estimator,
                        name="model",
                        signature=infer_signature(x_test, estimator.predict(x_test)),
                        registered_model_name=model,
                    )
            features[model] = x_test.reset_index(drop=True)
            labels[model] = y_test.reset_index(drop=True)
    return TwoModels(tracking_uri, features, labels)


@dataclass
class Server:
    url: str
    data_dir: Path
    handle: Any
    key: str  # every route but /health needs it

    @property
    def headers(self) -> dict[str, str]:
        """The key, as a client sends it."""
        return {"Authorization": f"Bearer {self.key}"}

    def records_path(self, endpoint: str) -> Path:
        """`endpoint`'s request log (each endpoint has its own)."""
        return self.handle.records_path(endpoint)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from endpoint_server import start_local_endpoint

    data_dir = tmp_path_factory.mktemp("endpoint")
    handle = start_local_endpoint(data_dir, registry.tracking_uri, max_lifetime=600)
    try:
        yield Server(handle.url, data_dir, handle, handle.key)
    finally:
        handle.stop()


def wait_until_done(endpoint: Any, deployment: str, attempts: int = 600) -> Any:
    """Poll the deployment's state until it stops changing (the server loads in background)."""
    import time

    for _ in range(attempts):
        status = endpoint.deployment_state(deployment)
        if status.done:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{deployment} still {status.state}")
