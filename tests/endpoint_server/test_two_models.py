"""Two models side by side on one local endpoint server, as two Azure ML endpoints would be.

breast-cancer (`breast-cancer-ep`) and wine (`wine-ep`, its own policy) walk the whole flow at
once (tests/faults/flow_harness: real Azurite state, queue and audit; every message delivered
1-3 times in a seeded random order, the two models' messages interleaved), on the real local
endpoint wired as bootstrap wires it (`Runtime.endpoint_for(policy)`), with real MLflow models
of both datasets. Before every delivery both endpoints are read back and scored: each one's
split only ever names its own model's deployments, and each model's requests are only ever
served by its own model (breast-cancer rows reaching the wine model fail its schema: a 500).

Then the live metrics: a model's canary arm counts its own endpoint's requests only, even
when the other endpoint has a deployment of the same name.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from domain.naming import deployment_name
from endpoint_server import LocalEndpointHandle, start_local_endpoint
from orchestrator.ports import ArmWindow, JobStatus, TrainingRequest
from tests.endpoint_fixtures import TwoModels, two_models, wait_until_done  # noqa: F401
from tests.faults.flow_harness import (  # noqa: F401
    Courier,
    Process,
    World,
    check_audit,
    flow_policy,
    flow_settings_fixture,
    landed,
)
from tests.harness import RecordingTrainingBackend, policy_yaml

pytestmark = pytest.mark.timeout(900)

MODELS = ("breast-cancer", "wine")
ENDPOINTS = {model: f"{model}-ep" for model in MODELS}  # as each policy names it (harness)
SEED = 14


class PerModelTraining(RecordingTrainingBackend):
    """Each model's runs register that model's next version (1, 2, ...): "running" on the
    first status read, then completed. The versions exist in the MLflow store
    (`two_models`), so the real endpoint loads them."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._versions: dict[str, tuple[str, str]] = {}  # run id -> (model, version)
        self._reads: Counter[str] = Counter()

    def submit(self, request: TrainingRequest) -> str:
        with self._lock:
            if request.run_id not in self._versions:
                mine = [run for run in self._versions.values() if run[0] == request.model]
                self._versions[request.run_id] = (request.model, str(len(mine) + 1))
            return super().submit(request)

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            self._reads[job_id] += 1
            if self._reads[job_id] == 1:
                return JobStatus(job_id=job_id, state="running")
            model, version = self._versions[job_id]
            return JobStatus(
                job_id=job_id,
                state="completed",
                registered_model=model,
                registered_version=version,
            )


@pytest.fixture
def endpoint_server(
    two_models: TwoModels,  # noqa: F811
    tmp_path: Path,
) -> Iterator[LocalEndpointHandle]:
    with start_local_endpoint(
        tmp_path / "endpoint", two_models.tracking_uri, max_lifetime=900
    ) as handle:
        yield handle


def endpoint_settings(handle: LocalEndpointHandle, two_models: TwoModels) -> dict[str, str]:  # noqa: F811
    return {
        "LOCAL_ENDPOINT_URL": handle.url,
        "LOCAL_ENDPOINT_KEY": handle.key,
        "LOCAL_ENDPOINT_DIR": str(handle.data_dir),
        "MLFLOW_TRACKING_URI": two_models.tracking_uri,
    }


class Watcher:
    """Reads both endpoints back and scores each with its own model's rows, between
    deliveries."""

    def __init__(self, handle: LocalEndpointHandle, two_models: TwoModels) -> None:  # noqa: F811
        self.two_models = two_models
        self.adapters = {
            model: LocalEndpoint(handle.url, ENDPOINTS[model], key=handle.key) for model in MODELS
        }
        self.http = httpx.Client(
            base_url=handle.url, timeout=30, headers={"Authorization": f"Bearer {handle.key}"}
        )
        self.splits: dict[str, list[dict[str, int]]] = {model: [] for model in MODELS}
        self.answers: dict[str, Counter[tuple[int, str]]] = {model: Counter() for model in MODELS}
        self.side_by_side = 0  # observations with both models mid-canary at once
        self._row = 0

    def __call__(self, courier: Courier) -> None:
        canaries = 0
        for model in MODELS:
            split = self.adapters[model].traffic()
            if not self.splits[model] or self.splits[model][-1] != split:
                self.splits[model].append(split)
            canaries += len(split) > 1
            self._row += 1
            answer = self.http.post(
                f"/{ENDPOINTS[model]}/score",
                json=self.two_models.payload(model, self._row),
                headers={"x-request-key": f"{model}-{self._row}"},
            )
            served = answer.headers.get("azureml-model-deployment") or answer.json().get("code")
            self.answers[model][(answer.status_code, served)] += 1
        self.side_by_side += canaries == 2

    def close(self) -> None:
        self.http.close()
        for adapter in self.adapters.values():
            adapter.close()


def test_two_models_walk_the_promotion_flow_at_once_each_on_its_own_endpoint(
    flow_settings: Any,
    endpoint_server: LocalEndpointHandle,
    two_models: TwoModels,  # noqa: F811
) -> None:
    settings = flow_settings(
        {model: flow_policy(model) for model in MODELS},
        **endpoint_settings(endpoint_server, two_models),
    )
    world = World(training=PerModelTraining())

    def start_process() -> Process:
        process = Process(settings, world)
        # The real local endpoint, one per policy, as bootstrap builds it (not the world's fake).
        process.ports.endpoints = process.runtime.endpoint_for
        return process

    watcher = Watcher(endpoint_server, two_models)
    try:
        courier = Courier(world, start_process, random.Random(SEED), between=watcher)
        for phase in range(2):  # generation 1 goes straight to production, 2 via the canary
            for model in MODELS:
                courier.inject(landed(model, phase, 0, 3))
            courier.run(max_steps=6000)
        watcher(courier)  # the endpoints as the flow left them
    finally:
        watcher.close()

    for model in MODELS:
        promotion = courier.process.aggregate(model).promotion
        history = [(h.candidate_version, str(h.outcome)) for h in promotion.history]
        assert history == [("1", "completed"), ("2", "completed")], model
        v1, v2 = deployment_name(model, "1"), deployment_name(model, "2")
        assert promotion.active is None and promotion.champion is not None
        assert promotion.champion.deployment == v2
        check_audit(courier.process, model)
        # Each endpoint walked its own canary, and every split it ever had was its own.
        assert watcher.splits[model] == [
            {},
            {v1: 100},
            {v1: 90, v2: 10},
            {v1: 50, v2: 50},
            {v2: 95, v1: 5},  # the production bake's holdback
            {v2: 100},
        ]
        adapter = LocalEndpoint(endpoint_server.url, ENDPOINTS[model], key=endpoint_server.key)
        with adapter:
            assert [
                (d.deployment, d.model_name, d.model_version, d.state)
                for d in adapter.deployments()
            ] == [(v2, model, "2", "succeeded")]
        # Every request reached its own model: served (200) by one of its deployments, or
        # nothing served yet (503; 404 before its endpoint's first deployment); never the
        # other model (a 500) or a missing deployment.
        answers = watcher.answers[model]
        assert {status for status, _ in answers} <= {200, 503, 404}, answers
        assert {served for status, served in answers if status == 200} == {v1, v2}
        assert {served for status, served in answers if status == 404} <= {"EndpointNotFound"}
        with sqlite3.connect(endpoint_server.records_path(ENDPOINTS[model])) as conn:
            logged = {row[0] for row in conn.execute("SELECT DISTINCT deployment FROM records")}
        assert logged == {v1, v2}, logged  # its own request log: its own deployments only
    assert watcher.side_by_side > 0  # both models were in their canary at the same time


def test_live_metrics_count_only_the_models_own_endpoint(
    make_runtime: Any,
    endpoint_server: LocalEndpointHandle,
    two_models: TwoModels,  # noqa: F811
) -> None:
    runtime = make_runtime(
        {model: policy_yaml(model) for model in MODELS},
        **endpoint_settings(endpoint_server, two_models),
    )
    shared = "shared-v1"  # the same deployment name on both endpoints
    start = datetime.now(UTC) - timedelta(seconds=1)
    sent = {"breast-cancer": 30, "wine": 50}
    correct: dict[str, int] = {}
    http = httpx.Client(
        base_url=endpoint_server.url,
        timeout=30,
        headers={"Authorization": f"Bearer {endpoint_server.key}"},
    )
    with http:
        for model in MODELS:
            endpoint = runtime.endpoint_for(runtime.policies[model])
            endpoint.deploy(model, "1", shared)
            assert wait_until_done(endpoint, shared).state == "succeeded"
            endpoint.set_traffic({shared: 100})
            feedback, correct[model] = [], 0
            for row in range(sent[model]):
                answer = http.post(
                    f"/{ENDPOINTS[model]}/score", json=two_models.payload(model, row)
                )
                assert answer.status_code == 200, answer.text
                label = int(two_models.labels[model][row])
                correct[model] += answer.json() == [label]
                feedback.append({"request_id": answer.headers["x-request-id"], "label": label})
            http.post(f"/{ENDPOINTS[model]}/feedback", json={"feedback": feedback})
    end = datetime.now(UTC) + timedelta(seconds=1)

    metrics = runtime.ports.metrics
    for model in MODELS:
        arms = [ArmWindow(deployment=shared, window_start=start, window_end=end)]
        live = metrics.live(model, f"p-{model}", 1, arms)
        arm = live.arms[shared]
        assert (arm.requests, arm.labeled, arm.correct) == (
            sent[model],
            sent[model],
            correct[model],
        )
