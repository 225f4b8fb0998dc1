"""A score sent before anything serves, over real HTTP: the 503 says so as JSON (which
endpoint, what it has, why none of it serves, where to look), a pinned deployment that is not
ready says which, and an endpoint that does not exist yet says how one comes into being."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from endpoint_server import start_local_endpoint
from endpoint_server.app import NO_LIVE_TRAFFIC
from tests.endpoint_fixtures import wait_until_done

KEY = "k3y-for-a-server-with-nothing-serving"
EP = "first-ep"
PAYLOAD = {"input_data": {"columns": ["a"], "data": [[1]]}}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server; its MLflow store is empty, so a deployment fails to load (no model)."""
    root: Path = tmp_path_factory.mktemp("nothing-serves")
    with start_local_endpoint(
        root / "endpoint", f"sqlite:///{root / 'mlflow.db'}", key=KEY, max_lifetime=300
    ) as handle:
        yield handle.url


def score(url: str, endpoint: str = EP, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30, headers={"x-endpoint-key": KEY}) as http:
        return http.post(f"/{endpoint}/score", json=PAYLOAD, headers=headers)


def test_a_score_before_anything_serves_says_why_then_with_a_deployment_without_traffic(
    url: str,
) -> None:
    with httpx.Client(base_url=url, timeout=30, headers={"x-endpoint-key": KEY}) as http:
        assert http.put(f"/{EP}").status_code == 201  # the endpoint, empty
    answer = score(url)
    assert answer.status_code == 503
    body = answer.json()
    assert body["code"] == NO_LIVE_TRAFFIC == "NoLiveTraffic"
    assert body["endpoint"] == EP
    assert (body["deployments"], body["traffic"]) == ([], {})
    assert body["error"] == f"nothing serves on endpoint {EP} yet: it has no deployment yet"
    assert "devhost.cli status" in body["hint"]

    with LocalEndpoint(url, EP, key=KEY) as endpoint:
        endpoint.deploy("churn", "1", "churn-v1")  # no such model: it fails to load
        assert wait_until_done(endpoint, "churn-v1").state == "failed"
    body = score(url).json()
    assert body["code"] == NO_LIVE_TRAFFIC
    assert body["deployments"] == [{"name": "churn-v1", "model_version": "1", "state": "failed"}]
    assert body["error"] == (
        f"nothing serves on endpoint {EP} yet: none of its deployments takes traffic: "
        "churn-v1 (v1, failed)"
    )


def test_a_pinned_deployment_that_is_not_ready_is_named(url: str) -> None:
    with LocalEndpoint(url, "pinned-ep", key=KEY) as endpoint:
        endpoint.deploy("churn", "1", "blue")
        assert wait_until_done(endpoint, "blue").state == "failed"
    answer = score(url, "pinned-ep", **{"azureml-model-deployment": "blue"})
    assert answer.status_code == 503
    assert answer.json() == {
        "error": "deployment blue of endpoint pinned-ep is failed",
        "code": "DeploymentNotReady",
        "endpoint": "pinned-ep",
        "deployment": "blue",
    }


def test_a_score_on_an_endpoint_not_created_yet_says_how_one_comes_into_being(url: str) -> None:
    answer = score(url, "later-ep")
    assert answer.status_code == 404
    body = answer.json()
    assert body["code"] == "EndpointNotFound"
    assert body["error"].startswith("endpoint later-ep not found: nothing serves there")
    assert "first deployment" in body["error"] and "policy's `endpoint`" in body["error"]
