"""Rings end to end: real Azurite state, queue and audit (tests/faults/flow_harness), the real
local endpoint server hosting two endpoints (the model's, and a second one standing in for a
second region), wired as bootstrap wires them, real MLflow models, and the second ring's gate
read by the real adapter (MlflowMetrics.live) from that endpoint's own request log.

breast-cancer v1 is a first model: its bake on the first ring, then the second ring (which
served nothing) gets it. v2 walks canary and bake on the first ring, then the second ring,
whose own old deployment (v1) is deleted at the end: both endpoints serve v2 alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from adapters.mlflow_metrics import MlflowMetrics
from adapters.mlflow_registry import MlflowRegistry
from domain.metrics import LiveMetrics
from domain.naming import deployment_name
from endpoint_server import LocalEndpointHandle, start_local_endpoint
from orchestrator.ports import ArmWindow
from tests.endpoint_fixtures import TwoModels, two_models  # noqa: F401
from tests.faults.flow_harness import (  # noqa: F401
    AutoTrainingBackend,
    Courier,
    FakeMetrics,
    Process,
    World,
    check_audit,
    flow_policy,
    flow_settings_fixture,
    landed,
)

pytestmark = pytest.mark.timeout(900)

MODEL = "breast-cancer"
ENDPOINT, NORTH = f"{MODEL}-ep", f"{MODEL}-north"  # the harness's policy names the first
RINGS = f"[{{endpoint: {ENDPOINT}}}, {{endpoint: {NORTH}, bake: 1s, max_error_rate: 0.01}}]"
V1, V2 = deployment_name(MODEL, "1"), deployment_name(MODEL, "2")


@pytest.fixture
def endpoint_server(
    two_models: TwoModels,  # noqa: F811
    tmp_path: Path,
) -> Iterator[LocalEndpointHandle]:
    with start_local_endpoint(
        tmp_path / "endpoint", two_models.tracking_uri, max_lifetime=900
    ) as handle:
        yield handle


class RealRingMetrics(FakeMetrics):
    """The world's offline and first-ring metrics, and a later ring's read for real from its
    endpoint's request log over the wall-clock time since the test began (the flow's clock is
    a fake one; the endpoint logs real time)."""

    def __init__(self, reader: MlflowMetrics, since: datetime) -> None:
        super().__init__()
        self.reader = reader
        self.since = since
        self.ring_reads: list[LiveMetrics] = []

    def live(self, model: str, promotion_id: str, step: int, arms: list[ArmWindow]) -> LiveMetrics:
        if not any(arm.endpoint for arm in arms):
            return super().live(model, promotion_id, step, arms)
        now = datetime.now(UTC)
        real = [
            arm.model_copy(update={"window_start": self.since, "window_end": now}) for arm in arms
        ]
        read = self.reader.live(model, promotion_id, step, real)
        self.ring_reads.append(read)
        return read


class Caller:
    """Live traffic on both endpoints between deliveries, and what each looked like."""

    def __init__(self, handle: LocalEndpointHandle, two_models: TwoModels) -> None:  # noqa: F811
        self.two_models = two_models
        self.adapters = {
            name: LocalEndpoint(handle.url, name, key=handle.key) for name in (ENDPOINT, NORTH)
        }
        self.http = httpx.Client(
            base_url=handle.url, timeout=30, headers={"Authorization": f"Bearer {handle.key}"}
        )
        self.seen: dict[str, list[dict[str, int]]] = {ENDPOINT: [], NORTH: []}
        self._row = 0

    def view(self, name: str) -> dict[str, int]:
        try:
            return self.adapters[name].traffic()
        except Exception:  # an endpoint comes into being with its first deployment
            return {}

    def __call__(self, courier: Courier) -> None:
        for name, seen in self.seen.items():
            traffic = self.view(name)
            if not seen or seen[-1] != traffic:
                seen.append(traffic)
            if not traffic:
                continue  # nothing serves there yet
            for _ in range(20):
                self._row += 1
                answer = self.http.post(
                    f"/{name}/score",
                    json=self.two_models.payload(MODEL, self._row),
                    headers={"x-request-key": f"caller-{self._row}"},
                )
                assert answer.status_code == 200

    def close(self) -> None:
        self.http.close()
        for adapter in self.adapters.values():
            adapter.close()


def test_a_promotion_walks_two_rings_on_the_real_local_endpoint(
    flow_settings: Any,
    endpoint_server: LocalEndpointHandle,
    two_models: TwoModels,  # noqa: F811
) -> None:
    settings = flow_settings(
        {MODEL: flow_policy(MODEL, approval=False, rings=RINGS)},
        LOCAL_ENDPOINT_URL=endpoint_server.url,
        LOCAL_ENDPOINT_KEY=endpoint_server.key,
        LOCAL_ENDPOINT_DIR=str(endpoint_server.data_dir),
        MLFLOW_TRACKING_URI=two_models.tracking_uri,
    )
    reader = MlflowMetrics(
        settings, MlflowRegistry(two_models.tracking_uri), endpoint_of=lambda model: ENDPOINT
    )
    metrics = RealRingMetrics(reader, since=datetime.now(UTC) - timedelta(seconds=1))
    world = World(training=AutoTrainingBackend(), metrics=metrics)

    def start_process() -> Process:
        process = Process(settings, world)
        process.ports.endpoints = process.runtime.endpoint_for  # the real local endpoints
        return process

    caller = Caller(endpoint_server, two_models)
    try:
        courier = Courier(world, start_process, random.Random(5), between=caller)
        for phase in range(2):  # v1: a first model; v2: canary and bake, then the second ring
            courier.inject(landed(MODEL, phase, 0, 3))
            courier.run(max_steps=6000)
        caller(courier)
    finally:
        caller.close()

    promotion = courier.process.aggregate(MODEL).promotion
    history = [(h.candidate_version, str(h.outcome)) for h in promotion.history]
    records = check_audit(courier.process, MODEL)
    why = [r.detail for r in records if r.action.startswith(("gate.", "promotion.rolled"))]
    assert history == [("1", "completed"), ("2", "completed")], json.dumps(why, indent=1)
    assert promotion.rings[NORTH].version == "2"
    # Each endpoint as the caller saw it: the second ring got each version only after the
    # first ring's bake, and its old deployment went at the end.
    assert caller.seen[NORTH][0] == {} and caller.seen[NORTH][-1] == {V2: 100}
    assert {V1: 100} in caller.seen[NORTH]
    assert caller.seen[ENDPOINT][-1] == {V2: 100}
    north, first = (
        LocalEndpoint(endpoint_server.url, n, key=endpoint_server.key) for n in (NORTH, ENDPOINT)
    )
    with north, first:
        assert [d.deployment for d in north.deployments()] == [V2]
        assert [d.deployment for d in first.deployments()] == [V2]
    # The second ring's gate passed on requests its own endpoint logged.
    passed = [r for r in records if r.action == "gate.passed" and r.detail["step"] == "ring-2"]
    assert len(passed) == 2
    assert all(read.arms for read in metrics.ring_reads)
    assert all(e["samples"]["candidate"] >= 50 for r in passed for e in r.detail["evidence"])
