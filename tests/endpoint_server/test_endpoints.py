"""One server, many endpoints, over real HTTP with real MLflow models: each endpoint (a
policy's `endpoint`) has its own deployments, traffic, mirror, request log and feedback, even
when both name a deployment alike; one endpoint's changes never touch another's; both survive
a restart. Breast-cancer rows sent to the wine model fail its schema (a 500): so a request
served by the other endpoint's model shows."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from endpoint_server import LocalEndpointHandle, start_local_endpoint
from tests.endpoint_fixtures import TwoModels, two_models, wait_until_done  # noqa: F401

BC, WINE = "bc-ep", "wine-ep"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("endpoints")


@pytest.fixture(scope="module")
def handle(two_models: TwoModels, data_dir: Path) -> Iterator[LocalEndpointHandle]:  # noqa: F811
    with start_local_endpoint(data_dir, two_models.tracking_uri, max_lifetime=600) as running:
        yield running


@pytest.fixture(scope="module")
def both(handle: LocalEndpointHandle) -> Iterator[tuple[LocalEndpoint, LocalEndpoint]]:
    """bc-ep: `blue` (breast-cancer v1) and `green` (v2), 100 % on blue; wine-ep: `blue`
    (wine v1), 100 %. The same deployment name on both endpoints, on purpose."""
    with (
        LocalEndpoint(handle.url, BC, key=handle.key) as bc,
        LocalEndpoint(handle.url, WINE, key=handle.key) as wine,
    ):
        bc.deploy("breast-cancer", "1", "blue")
        bc.deploy("breast-cancer", "2", "green")
        wine.deploy("wine", "1", "blue")
        for endpoint, name in ((bc, "blue"), (bc, "green"), (wine, "blue")):
            assert wait_until_done(endpoint, name).state == "succeeded"
        bc.set_traffic({"blue": 100})
        wine.set_traffic({"blue": 100})
        yield bc, wine


def http(handle: LocalEndpointHandle) -> httpx.Client:
    return httpx.Client(
        base_url=handle.url, timeout=30, headers={"Authorization": f"Bearer {handle.key}"}
    )


def score(
    client: httpx.Client,
    endpoint: str,
    two_models: TwoModels,  # noqa: F811
    model: str,
    n: int,
) -> list[httpx.Response]:
    return [
        client.post(
            f"/{endpoint}/score",
            json=two_models.payload(model, row),
            headers={"x-request-key": f"{model}-{row}"},
        )
        for row in range(n)
    ]


def rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


def test_each_endpoint_has_its_own_deployments_even_with_the_same_name(
    both: tuple[LocalEndpoint, LocalEndpoint],
) -> None:
    bc, wine = both
    assert {(d.deployment, d.model_name, d.model_version) for d in bc.deployments()} == {
        ("blue", "breast-cancer", "1"),
        ("green", "breast-cancer", "2"),
    }
    assert [(d.deployment, d.model_name, d.state) for d in wine.deployments()] == [
        ("blue", "wine", "succeeded")
    ]
    assert wine.deployment_state("green").state == "missing"


def test_a_traffic_change_on_one_endpoint_leaves_the_other_alone(
    both: tuple[LocalEndpoint, LocalEndpoint],
    handle: LocalEndpointHandle,
    two_models: TwoModels,  # noqa: F811
) -> None:
    bc, wine = both
    bc.set_traffic({"blue": 50, "green": 50})
    try:
        assert bc.traffic() == {"blue": 50, "green": 50}
        assert wine.traffic() == {"blue": 100}
        # wine-ep has no `green`: its split cannot name bc-ep's deployment.
        with pytest.raises(Exception, match="do not exist"):
            wine.set_traffic({"blue": 50, "green": 50})
        assert bc.traffic() == {"blue": 50, "green": 50} and wine.traffic() == {"blue": 100}
        with http(handle) as client:
            bc_answers = score(client, BC, two_models, "breast-cancer", 60)
            wine_answers = score(client, WINE, two_models, "wine", 30)
        # Every request is served by its own endpoint's model: no schema failure (a 500).
        assert {r.status_code for r in bc_answers + wine_answers} == {200}
        served = Counter(r.headers["azureml-model-deployment"] for r in bc_answers)
        assert set(served) == {"blue", "green"}
        assert {r.headers["azureml-model-deployment"] for r in wine_answers} == {"blue"}
        # wine's predictions are wine classes (0..2), breast-cancer's 0..1.
        assert {p for r in wine_answers for p in r.json()} <= {0, 1, 2}
        assert len({p for r in wine_answers for p in r.json()}) >= 2
    finally:
        bc.set_traffic({"blue": 100})


def test_each_endpoint_keeps_its_own_request_log_and_feedback(
    both: tuple[LocalEndpoint, LocalEndpoint],
    handle: LocalEndpointHandle,
    two_models: TwoModels,  # noqa: F811
) -> None:
    bc, wine = both
    with http(handle) as client:
        bc_ids = [
            r.headers["x-request-id"] for r in score(client, BC, two_models, "breast-cancer", 12)
        ]
        wine_ids = [r.headers["x-request-id"] for r in score(client, WINE, two_models, "wine", 7)]
        for endpoint, ids, label in ((BC, bc_ids, 1), (WINE, wine_ids, 2)):
            feedback = [{"request_id": rid, "label": label} for rid in ids]
            answer = client.post(f"/{endpoint}/feedback", json={"feedback": feedback})
            assert answer.json() == {"accepted": len(ids)}
    bc.flush_records()
    wine.flush_records()
    bc_log, wine_log = handle.records_path(BC), handle.records_path(WINE)
    assert bc_log != wine_log
    bc_logged = {rid for (rid,) in rows(bc_log, "SELECT request_id FROM records")}
    wine_logged = {rid for (rid,) in rows(wine_log, "SELECT request_id FROM records")}
    assert set(bc_ids) <= bc_logged and set(wine_ids) <= wine_logged
    assert not bc_logged & set(wine_ids) and not wine_logged & set(bc_ids)
    wine_models = rows(wine_log, "SELECT DISTINCT deployment, model_version FROM records")
    assert wine_models == [("blue", "1")]
    bc_labels = dict(rows(bc_log, "SELECT request_id, label FROM feedback"))
    wine_labels = dict(rows(wine_log, "SELECT request_id, label FROM feedback"))
    assert {json.loads(v) for k, v in bc_labels.items() if k in bc_ids} == {1}
    assert set(wine_labels) >= set(wine_ids) and not set(wine_labels) & set(bc_ids)


def test_deleting_on_one_endpoint_leaves_the_same_name_on_the_other(
    both: tuple[LocalEndpoint, LocalEndpoint],
    handle: LocalEndpointHandle,
    two_models: TwoModels,  # noqa: F811
) -> None:
    bc, wine = both
    wine.delete("blue")  # its only deployment: the endpoint serves nothing now
    try:
        assert wine.deployments() == [] and wine.traffic() == {}
        assert bc.deployment_state("blue").state == "succeeded"
        assert bc.traffic() == {"blue": 100}
        with http(handle) as client:
            [nothing] = score(client, WINE, two_models, "wine", 1)
            assert nothing.status_code == 503
            assert (nothing.json()["code"], nothing.json()["endpoint"]) == ("NoLiveTraffic", WINE)
            assert score(client, BC, two_models, "breast-cancer", 1)[0].status_code == 200
    finally:
        wine.deploy("wine", "1", "blue")
        assert wait_until_done(wine, "blue").state == "succeeded"
        wine.set_traffic({"blue": 100})


def test_an_unknown_endpoint_is_a_404_until_it_is_created(
    both: tuple[LocalEndpoint, LocalEndpoint], handle: LocalEndpointHandle
) -> None:
    with http(handle) as client:
        for method, path in (
            ("POST", "/nope-ep/score"),
            ("GET", "/nope-ep/traffic"),
            ("GET", "/nope-ep/deployments"),
            ("GET", "/nope-ep"),
            ("POST", "/nope-ep/feedback"),
        ):
            answer = client.request(method, path, json={"request_id": "r", "label": 1})
            assert answer.status_code == 404, (method, path)
            assert answer.json()["code"] == "EndpointNotFound"
        with LocalEndpoint(handle.url, "nope-ep", key=handle.key) as nope:
            # The adapter reads an endpoint not created yet as an empty one.
            assert (nope.deployments(), nope.traffic(), nope.mirror()) == ([], {}, {})
            assert nope.deployment_state("blue").state == "missing"
        assert client.put("/made-ep").status_code == 201
        assert client.put("/made-ep").status_code == 200
        assert client.get("/made-ep/traffic").json() == {"traffic": {}, "mirror_traffic": {}}
        listed = {e["name"]: e for e in client.get("/endpoints").json()}
        assert {BC, WINE, "made-ep"} <= set(listed) and "nope-ep" not in listed
        assert listed[WINE]["traffic"] == {"blue": 100}
        for bad in ("ab", "9-ep", "a_b", "x" * 33, "health", "endpoints"):
            answer = client.put(f"/{bad}")
            assert answer.status_code == 400, bad
            assert bad in answer.json()["error"]
        refused = client.put("/a_b/deployments/blue", json={"model_name": "m", "model_version": 1})
        assert refused.status_code == 400
        assert "a_b" not in {e["name"] for e in client.get("/endpoints").json()}
        assert client.get("/health").json() == {"status": "ok"}  # still the server's own


def test_every_endpoint_survives_a_restart(
    two_models: TwoModels,  # noqa: F811
    tmp_path: Path,
) -> None:
    with (
        start_local_endpoint(tmp_path, two_models.tracking_uri, max_lifetime=120) as first,
        LocalEndpoint(first.url, BC, key=first.key) as one,
        LocalEndpoint(first.url, WINE, key=first.key) as other,
    ):
        one.deploy("breast-cancer", "1", "blue")
        one.deploy("breast-cancer", "2", "green")
        other.deploy("wine", "2", "blue")
        for endpoint, name in ((one, "blue"), (one, "green"), (other, "blue")):
            assert wait_until_done(endpoint, name).state == "succeeded"
        one.set_traffic({"blue": 80, "green": 20})
        other.set_traffic({"blue": 100})
    with (
        start_local_endpoint(tmp_path, two_models.tracking_uri, max_lifetime=120) as again,
        LocalEndpoint(again.url, BC, key=again.key) as one,
        LocalEndpoint(again.url, WINE, key=again.key) as other,
    ):
        assert one.traffic() == {"blue": 80, "green": 20}
        assert other.traffic() == {"blue": 100}
        assert wait_until_done(other, "blue").model_version == "2"
        assert wait_until_done(one, "blue").model_name == "breast-cancer"
        with http(again) as client:
            answers = score(client, WINE, two_models, "wine", 5)
        assert {r.status_code for r in answers} == {200}
