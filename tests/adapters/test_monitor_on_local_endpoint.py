"""Retrain on decay, end to end on the real local endpoint: a champion registered in a real
MLflow store (with its holdout accuracy on its run) serves on the local endpoint server; real
requests are scored over HTTP and labelled through its feedback route; the production monitor
reads them through the real MetricsReader (adapters/mlflow_metrics.py: the request log, the
canary evaluation, MLflow) and its own offline accuracy from the registry. Labels worse than
offline start a retrain with no person, once per cooldown; labels as good start nothing.
The state, bus and training backend are the in-memory fakes (the flow around them is shown
on Azurite elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from adapters.mlflow_metrics import MlflowMetrics
from adapters.mlflow_registry import MlflowRegistry
from orchestrator.aggregate import ModelAggregate
from promotion.state import PromotionState, ServingModel
from retrain.state import RunRecord
from tests.endpoint_fixtures import Registry, Server, wait_until_done
from tests.fakes import fake_runtime, fake_settings
from tests.harness import ShiftedClock
from tests.mlflow_store import mlflow_store

MODEL = "bc-monitored"  # its own registered model: the shared fixtures' versions stay as they are
MONITOR = "{window: 1h, min_samples: 100, accuracy_drop: 0.03, max_error_rate: 0.05, cooldown: 6h, every: 1m}"  # noqa: E501


@pytest.fixture(scope="module")
def champion(registry: Registry) -> float:
    """Version 1 of MODEL in the shared MLflow store, its holdout accuracy logged on its run
    as the training pipeline's evaluate step does; that accuracy."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    features, labels = registry.features, registry.labels
    estimator = LogisticRegression(max_iter=5000).fit(features, labels)
    accuracy = float(accuracy_score(labels, estimator.predict(features)))
    with mlflow_store(registry.tracking_uri), mlflow.start_run(run_name="monitored-v1"):
        mlflow.log_metric("accuracy", accuracy)
        mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(features, estimator.predict(features)),
            registered_model_name=MODEL,
        )
    return accuracy


def policy(endpoint: str) -> str:
    return (
        f"model: {MODEL}\nendpoint: {endpoint}\n"
        f"data: {{container: training-data, prefix: {MODEL}/}}\n"
        "retrain: {min_new_files: 1, cooldown: 0s}\n"
        f"monitor: {MONITOR}\n"
    )


@pytest.fixture
def served(server: Server, registry: Registry, champion: float, request: Any) -> Iterator[Any]:
    """A world whose champion serves on its own endpoint of the real server."""
    endpoint = f"mon{request.node.name[-6:].replace('_', '')}-ep"
    with LocalEndpoint(server.url, endpoint, key=server.key) as port:
        port.deploy(MODEL, "1", "mon-v1")
        assert wait_until_done(port, "mon-v1").state == "succeeded"
        port.set_traffic({"mon-v1": 100})
        settings = fake_settings(
            MLFLOW_TRACKING_URI=registry.tracking_uri,
            LOCAL_ENDPOINT_URL=server.url,
            LOCAL_ENDPOINT_KEY=server.key,
            LOCAL_ENDPOINT_DIR=str(server.data_dir),
        )
        metrics = MlflowMetrics(
            settings, MlflowRegistry(registry.tracking_uri), endpoint_of=lambda model: endpoint
        )
        clock = ShiftedClock()  # the request log's times are real: so is the monitor's clock
        world = fake_runtime(
            policy(endpoint), clock=clock, settings=settings, endpoint=port, metrics=metrics
        )
        since = clock() - timedelta(hours=2)
        serving = ServingModel(version="1", deployment="mon-v1", since=since)
        last_run = RunRecord(
            run_id=f"{MODEL}-run-1",
            status="completed",
            registered_version="1",
            data_count=1,
            data_sample=["https://acct.blob.core.windows.net/training-data/bc/a.csv"],
        )

        def arrange(aggregate: ModelAggregate) -> ModelAggregate:
            promotion = PromotionState(champion=serving, last_known_good=serving)
            retrain = aggregate.retrain.model_copy(update={"runs": [last_run]})
            return aggregate.model_copy(update={"promotion": promotion, "retrain": retrain})

        world.store.seed(MODEL, arrange)
        yield world, clock, endpoint


def traffic(server: Server, registry: Registry, endpoint: str, *, wrong_every: int) -> None:
    """150 scored requests, each labelled: the truth, except every `wrong_every`-th label is
    flipped (0: none)."""
    features, labels = registry.features, registry.labels
    feedback = []
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        for i in range(150):
            frame = features.iloc[[i]]
            body = {"input_data": {"columns": list(frame.columns), "data": frame.values.tolist()}}
            response = http.post(f"/{endpoint}/score", json=body, headers={"x-request-key": str(i)})
            assert response.status_code == 200, response.text
            label = int(labels[i])
            if wrong_every and i % wrong_every == 0:
                label = 1 - label
            feedback.append({"request_id": response.headers["x-request-id"], "label": label})
        assert http.post(f"/{endpoint}/feedback", json={"feedback": feedback}).status_code == 202


def test_feedback_worse_than_offline_starts_a_retrain_once_per_cooldown(
    served: Any, server: Server, registry: Registry, champion: float
) -> None:
    world, clock, endpoint = served
    assert champion > 0.9  # the offline accuracy the live one is judged against
    traffic(server, registry, endpoint, wrong_every=3)  # about a third of the labels disagree
    report = world.runtime.monitor.run()
    [started] = report.triggered
    assert "accuracy" in started["reason"] and "below" in started["reason"]
    [request] = world.training.submissions
    assert request.run_id == started["run_id"] and request.model == MODEL
    decay = next(r for r in world.audit.read(MODEL) if r.action == "monitor.decay_detected")
    accuracy = decay.detail["checks"][0]
    assert accuracy["samples"] == 150 and accuracy["offline"] == pytest.approx(champion)
    assert accuracy["observed"] < 0.75 and accuracy["p_value"] < accuracy["alpha"]

    # The job fails; a minute later still decayed, but within the cooldown: nothing more.
    world.training.fail(request.run_id, "no model")
    clock.advance(timedelta(minutes=2))
    world.deliver_due()  # its check: the run ends
    assert world.aggregate(MODEL).retrain.current_job is None
    report = world.runtime.monitor.run()
    assert report.evaluated == {MODEL: "cooling_down"} and report.triggered == []
    assert len(world.training.submissions) == 1


def test_feedback_as_good_as_offline_starts_nothing(
    served: Any, server: Server, registry: Registry
) -> None:
    world, _, endpoint = served
    traffic(server, registry, endpoint, wrong_every=0)
    report = world.runtime.monitor.run()
    assert report.evaluated == {MODEL: "healthy"} and report.triggered == []
    assert world.training.submissions == []
    record = world.aggregate(MODEL).retrain.monitor
    assert record is not None and "accuracy" in record.reason and "not shown below" in record.reason
