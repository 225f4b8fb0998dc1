"""The shadow stage's reading (MetricsReader.shadow): on the real local endpoint's request
log (mirrored copies flagged by the server), and on Azure ML data collector files."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from adapters.mlflow_metrics import MlflowMetrics, shadow_metrics
from adapters.mlflow_registry import MlflowRegistry
from pipelines.canary.evaluate_canary import PredictionRecord, read_data_collector
from tests.endpoint_fixtures import Registry, Server, wait_until_done
from tests.fakes import fake_settings

ENDPOINT = "shadow-ep"
SCORE = f"/{ENDPOINT}/score"
PIN = "azureml-model-deployment"


@pytest.fixture(scope="module")
def endpoint(server: Server, registry: Registry) -> Iterator[LocalEndpoint]:
    """sh-v1 (model v1) takes all live traffic; sh-v2 (model v2, heavily regularized: it
    disagrees with v1 on some rows) is deployed beside it."""
    with LocalEndpoint(server.url, ENDPOINT, key=server.key) as ep:
        ep.deploy(registry.model, "1", "sh-v1")
        ep.deploy(registry.model, "2", "sh-v2")
        assert wait_until_done(ep, "sh-v1").state == "succeeded"
        assert wait_until_done(ep, "sh-v2").state == "succeeded"
        ep.set_traffic({"sh-v1": 100})
        yield ep


def payload(registry: Registry, row: int) -> dict[str, Any]:
    frame = registry.features.iloc[[row]]
    return {"input_data": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def test_the_local_shadow_reading_pairs_mirrored_copies_with_production(
    server: Server, endpoint: LocalEndpoint, registry: Registry, tmp_path: Path
) -> None:
    endpoint.set_mirror({"sh-v2": 50})
    start = datetime.now(UTC) - timedelta(seconds=1)
    rows = {}
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        for i in range(len(registry.features)):
            response = http.post(
                SCORE, json=payload(registry, i), headers={"x-request-key": f"c{i}"}
            )
            assert response.status_code == 200 and response.headers[PIN] == "sh-v1"
            rows[response.headers["x-request-id"]] = i
        # What each model answers on each row, asked directly (a pinned request is never
        # mirrored): the expected agreement, computed without the adapter.
        answers = {
            name: {
                i: http.post(SCORE, json=payload(registry, i), headers={PIN: name}).json()
                for i in rows.values()
            }
            for name in ("sh-v1", "sh-v2")
        }
    endpoint.set_mirror({})
    endpoint.flush_records()
    end = datetime.now(UTC) + timedelta(seconds=1)
    with sqlite3.connect(server.records_path(ENDPOINT)) as conn:
        mirrored_ids = [
            row[0]
            for row in conn.execute(
                "SELECT request_id FROM records WHERE mirrored = 1 AND deployment = 'sh-v2'"
            )
        ]
    assert 0.3 * len(rows) <= len(mirrored_ids) <= 0.7 * len(rows)
    expected_agreed = sum(
        answers["sh-v1"][rows[rid]] == answers["sh-v2"][rows[rid]] for rid in mirrored_ids
    )
    assert 0 < expected_agreed < len(mirrored_ids)  # the two models differ on some rows

    settings = fake_settings(
        LOCAL_ENDPOINT_URL=server.url,
        LOCAL_ENDPOINT_KEY=server.key,
        LOCAL_ENDPOINT_DIR=str(server.data_dir),
        MLFLOW_TRACKING_URI=registry.tracking_uri,
    )
    reader = MlflowMetrics(
        settings, MlflowRegistry(registry.tracking_uri), endpoint_of=lambda model: ENDPOINT
    )
    metrics = reader.shadow(registry.model, "sh-v2", "sh-v1", start, end)
    # Production's arm: its live requests only (the pinned ones count: they were live too).
    assert metrics.production.requests == 2 * len(rows)  # live + pinned to v1
    assert metrics.candidate.requests == len(mirrored_ids) + len(rows)  # mirrored + pinned
    assert metrics.pairs == len(mirrored_ids)
    assert metrics.agreed == expected_agreed
    assert len(metrics.candidate.latency_ms) == metrics.candidate.requests


def at(seconds: float) -> datetime:
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_shadow_metrics_count_errors_pair_once_and_keep_to_the_window() -> None:
    records = [
        PredictionRecord("r1", "v1", at(1), 200, [1], 10.0),
        PredictionRecord(
            "r1", "v2", at(1), 200, [{"label": 1, "probability": 0.7}], 12.0, mirrored=True
        ),
        PredictionRecord("r2", "v1", at(2), 200, [0], 10.0),
        PredictionRecord("r2", "v2", at(2), 200, [1], 12.0, mirrored=True),  # disagrees
        PredictionRecord("r3", "v1", at(3), 200, [0], 10.0),
        PredictionRecord("r3", "v2", at(3), 500, None, 5.0, mirrored=True),  # an error: no pair
        PredictionRecord("r4", "v1", at(4), 503, None, 1.0),
        PredictionRecord("r5", "v1", at(5), 200, [1], 10.0),
        PredictionRecord("r5", "v1", at(5), 200, [1], 10.0, mirrored=True),  # not production's
        PredictionRecord("r6", "v1", at(99), 200, [1], 10.0),  # outside the window
    ]
    metrics = shadow_metrics(records, "v2", "v1", at(0), at(10))
    assert (metrics.production.requests, metrics.production.errors) == (5, 1)
    assert (metrics.candidate.requests, metrics.candidate.errors) == (3, 1)
    assert (metrics.pairs, metrics.agreed) == (2, 1)
    assert metrics.candidate.latency_ms == [12.0, 12.0]


def test_azure_the_collectors_records_pair_on_the_callers_request_id(tmp_path: Path) -> None:
    """What the Azure reading relies on: the data collector's model_inputs/model_outputs of
    both deployments, the mirrored copy carrying the caller's x-request-id (`xrequestid`).
    The candidate takes no live traffic in the shadow, so its records are the mirrored ones."""

    def events(deployment: str, rid: str, correlation: str, output: Any) -> list[dict]:
        source = f"/subscriptions/s/endpoints/ep/deployments/{deployment}"
        time = "2025-01-01T00:00:05Z"
        return [
            {"type": "azureml.inference.model_inputs", "source": source, "time": time,
             "correlationid": correlation, "xrequestid": rid, "data": [{"x": 1}]},
            {"type": "azureml.inference.model_outputs", "source": source, "time": time,
             "correlationid": correlation, "xrequestid": rid, "data": output},
        ]  # fmt: skip

    lines = [
        *events("ep-v1", "req-1", "c-1", [1]),
        *events("ep-v2", "req-1", "c-2", [1]),
        *events("ep-v1", "req-2", "c-3", [0]),
        *events("ep-v2", "req-2", "c-4", [1]),
    ]
    folder = tmp_path / "2025" / "01" / "01" / "00"
    folder.mkdir(parents=True)
    (folder / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    records = read_data_collector(tmp_path, at(0), at(60))
    metrics = shadow_metrics(records, "ep-v2", "ep-v1", at(0), at(60))
    assert (metrics.pairs, metrics.agreed) == (2, 1)
    assert metrics.candidate.latency_ms == []  # the collector records none: the gate waits


class _Latencies:
    """LatencyReader: what the endpoint's traffic log would give each deployment."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def latencies(
        self, endpoint: str, deployment: str, start: datetime, end: datetime, limit: int
    ) -> list[float]:
        self.asked.append((endpoint, deployment))
        return [12.0, 13.0] if deployment == "ep-v2" else [10.0, 11.0]


@pytest.mark.parametrize("feedback", [None, "missing"])
def test_azure_the_shadow_reads_the_collectors_records_and_no_feedback(
    tmp_path: Path, feedback: str | None
) -> None:
    """Agreement needs no labels: the shadow reads without CANARY_FEEDBACK_URI and never
    fetches the feedback table (a location that cannot be fetched is not touched)."""

    def events(deployment: str, rid: str, output: Any) -> list[dict]:
        source = f"/subscriptions/s/endpoints/ep/deployments/{deployment}"
        time = "2025-01-01T00:00:05Z"
        common = {
            "source": source,
            "time": time,
            "correlationid": f"{deployment}-{rid}",
            "xrequestid": rid,
        }
        return [
            {"type": "azureml.inference.model_inputs", **common, "data": [{"x": 1}]},
            {"type": "azureml.inference.model_outputs", **common, "data": output},
        ]  # fmt: skip

    records = tmp_path / "records"
    folder = records / "2025" / "01" / "01" / "00"
    folder.mkdir(parents=True)
    lines = [*events("ep-v1", "req-1", [1]), *events("ep-v2", "req-1", [1])]
    (folder / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    values = {
        "AZUREML_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "AZUREML_RESOURCE_GROUP": "rg",
        "AZUREML_WORKSPACE": "ws",
        "CANARY_RECORDS_URI": str(records),
    }
    if feedback is not None:
        values["CANARY_FEEDBACK_URI"] = str(tmp_path / "no-such-feedback")
    latencies = _Latencies()
    reader = MlflowMetrics(
        fake_settings(**values),
        MlflowRegistry(f"sqlite:///{tmp_path / 'unused.db'}"),
        endpoint_of=lambda model: "ep",
        latency=latencies,
    )
    metrics = reader.shadow("m", "ep-v2", "ep-v1", at(0), at(60))
    assert (metrics.production.requests, metrics.candidate.requests) == (1, 1)
    assert (metrics.pairs, metrics.agreed) == (1, 1)
    assert metrics.candidate.latency_ms == [12.0, 13.0]
    assert latencies.asked == [("ep", "ep-v2"), ("ep", "ep-v1")]
