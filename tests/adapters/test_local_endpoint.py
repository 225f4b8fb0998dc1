"""The local endpoint server and its client adapter, over real HTTP with real MLflow models."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from endpoint_server.routing import route
from orchestrator.ports import EndpointError, InvalidTraffic, OnlineEndpoint
from pipelines.canary.evaluate_canary import collect_local_live_metrics, is_correct
from tests.endpoint_fixtures import Registry, Server, wait_until_done

ENDPOINT = "bc-ep"
SCORE, FEEDBACK = f"/{ENDPOINT}/score", f"/{ENDPOINT}/feedback"
SPLIT = {"bc-v1": 90, "bc-v2": 10}


@pytest.fixture(scope="module")
def endpoint(server: Server, registry: Registry) -> Iterator[LocalEndpoint]:
    """bc-v1 (model v1) and bc-v2 (model v2) deployed, all traffic on bc-v1."""
    with LocalEndpoint(server.url, ENDPOINT, key=server.key) as ep:
        ep.deploy(registry.model, "1", "bc-v1")
        ep.deploy(registry.model, "2", "bc-v2")
        assert wait_until_done(ep, "bc-v1").state == "succeeded"
        assert wait_until_done(ep, "bc-v2").state == "succeeded"
        ep.set_traffic({"bc-v1": 100})
        yield ep


def payload(registry: Registry, row: int) -> dict[str, Any]:
    frame = registry.features.iloc[[row]]
    return {"input_data": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def test_the_adapter_implements_the_port(endpoint: LocalEndpoint) -> None:
    assert isinstance(endpoint, OnlineEndpoint)


def test_deploy_state_and_delete_lifecycle(endpoint: LocalEndpoint, registry: Registry) -> None:
    assert endpoint.deployment_state("life-v1").state == "missing"
    assert endpoint.deploy(registry.model, "1", "life-v1") == "life-v1"
    assert endpoint.deployment_state("life-v1").state in ("creating", "succeeded")
    status = wait_until_done(endpoint, "life-v1")
    assert (status.state, status.error, status.model_version) == ("succeeded", None, "1")

    endpoint.deploy(registry.model, "1", "life-v1")  # same version: a no-op, no reload
    assert endpoint.deployment_state("life-v1").state == "succeeded"

    endpoint.delete("life-v1")
    assert endpoint.deployment_state("life-v1").state == "missing"
    endpoint.delete("life-v1")  # already gone: fine


def test_deployments_lists_every_deployment_with_its_model_and_state(
    endpoint: LocalEndpoint, registry: Registry
) -> None:
    listed = {status.deployment: status for status in endpoint.deployments()}
    assert {"bc-v1", "bc-v2"} <= set(listed)
    assert (listed["bc-v1"].model_name, listed["bc-v1"].model_version) == (registry.model, "1")
    assert (listed["bc-v2"].state, listed["bc-v2"].model_version) == ("succeeded", "2")
    endpoint.deploy(registry.model, "99", "gone-v99")  # a version that does not exist
    try:
        wait_until_done(endpoint, "gone-v99")
        [failed] = [s for s in endpoint.deployments() if s.deployment == "gone-v99"]
        assert failed.state == "failed" and failed.error
    finally:
        endpoint.delete("gone-v99")
    assert "gone-v99" not in {status.deployment for status in endpoint.deployments()}


def test_two_adapters_on_two_endpoints_of_one_server_never_touch_each_other(
    server: Server, endpoint: LocalEndpoint, registry: Registry
) -> None:
    with LocalEndpoint(server.url, "other-ep", key=server.key) as other:
        # Not created yet: it reads as an empty endpoint, not as bc-ep's.
        assert (other.deployments(), other.traffic(), other.mirror()) == ([], {}, {})
        assert other.deployment_state("bc-v1").state == "missing"
        other.flush_records()  # nothing recorded yet: nothing to wait for
        for change in (lambda: other.set_traffic({"bc-v1": 100}), lambda: other.set_mirror({})):
            with pytest.raises(EndpointError, match="404 endpoint other-ep not found") as missing:
                change()  # an endpoint is made by its first deployment, not by a split
            assert not missing.value.transient
        other.deploy(registry.model, "2", "bc-v2")
        with pytest.raises(InvalidTraffic, match="do not exist"):
            other.set_traffic({"bc-v1": 100})  # bc-ep's deployment is not other-ep's
        other.deploy(registry.model, "2", "bc-v1")  # the same name, another version
        assert wait_until_done(other, "bc-v1").model_version == "2"
        other.set_traffic({"bc-v1": 100})
        assert endpoint.deployment_state("bc-v1").model_version == "1"
        endpoint.set_traffic(SPLIT)
        assert other.traffic() == {"bc-v1": 100}
        other.delete("bc-v2")
        other.delete("bc-v1")
        assert other.deployments() == [] and other.traffic() == {}
        assert endpoint.traffic() == SPLIT
        assert endpoint.deployment_state("bc-v1").state == "succeeded"
    endpoint.set_traffic({"bc-v1": 100})


def test_an_endpoint_name_azure_would_refuse_is_refused_before_anything_is_sent(
    server: Server,
) -> None:
    for bad in ("ep", "1-ep", "bc_ep", "bc/ep", "x" * 33):
        with pytest.raises(ValueError, match="not a valid endpoint name"):
            LocalEndpoint(server.url, bad, key=server.key)


def test_a_model_that_cannot_load_fails_the_deployment_with_the_reason(
    endpoint: LocalEndpoint, registry: Registry
) -> None:
    endpoint.deploy(registry.model, "99", "broken-v99")
    status = wait_until_done(endpoint, "broken-v99")
    assert status.state == "failed"
    assert status.error and "99" in status.error
    with pytest.raises(EndpointError, match="failed, not succeeded"):
        endpoint.set_traffic({"bc-v1": 50, "broken-v99": 50})
    endpoint.deploy(registry.model, "99", "broken-v99")  # a failed deployment is retried
    assert wait_until_done(endpoint, "broken-v99").state == "failed"
    endpoint.delete("broken-v99")


def test_bad_traffic_is_refused_before_anything_is_sent(server: Server) -> None:
    sent: list[str] = []
    client = httpx.Client(
        base_url=server.url,
        headers=server.headers,
        event_hooks={"request": [lambda r: sent.append(r.url.path)]},
    )
    with LocalEndpoint(server.url, ENDPOINT, client=client) as ep:
        with pytest.raises(InvalidTraffic, match="sum to 100"):
            ep.set_traffic({"bc-v1": 80})
        with pytest.raises(InvalidTraffic, match="at most 50"):  # 30 + 30
            ep.set_mirror({"bc-v2": 30, "bc-v3": 30})
        assert sent == []
        # What only the server can know is checked there, and reported the same way.
        with pytest.raises(InvalidTraffic, match="do not exist"):
            ep.set_traffic({"bc-v1": 90, "nope-v1": 10})
        assert sent == [f"/{ENDPOINT}/traffic"]


def test_a_deployment_that_shares_the_traffic_cannot_be_deleted(endpoint: LocalEndpoint) -> None:
    endpoint.set_traffic(SPLIT)
    try:
        for name in SPLIT:
            with pytest.raises(EndpointError, match="409"):
                endpoint.delete(name)
            assert endpoint.deployment_state(name).state == "succeeded"
        assert endpoint.traffic() == SPLIT
    finally:
        endpoint.set_traffic({"bc-v1": 100})


def test_the_only_serving_deployment_can_be_removed(
    endpoint: LocalEndpoint, registry: Registry
) -> None:
    # A first model rolled back: nothing is left to serve, which the orchestrator records.
    endpoint.delete("bc-v1")
    assert endpoint.deployment_state("bc-v1").state == "missing"
    assert endpoint.traffic() == {}
    endpoint.deploy(registry.model, "1", "bc-v1")  # put the module's endpoint back
    assert wait_until_done(endpoint, "bc-v1").state == "succeeded"
    endpoint.set_traffic({"bc-v1": 100})


def test_keyed_requests_over_http_follow_the_split_and_reach_mlflow(
    server: Server, endpoint: LocalEndpoint, registry: Registry
) -> None:
    endpoint.set_traffic(SPLIT)
    assert endpoint.traffic() == SPLIT
    start = datetime.now(UTC) - timedelta(seconds=1)
    seen: dict[str, str] = {}
    labels: dict[str, int] = {}
    predictions: dict[str, list[int]] = {}
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        for i in range(300):
            key = f"customer-{i}"
            row = i % len(registry.features)
            response = http.post(SCORE, json=payload(registry, row), headers={"x-request-key": key})
            assert response.status_code == 200, response.text
            deployment = response.headers["azureml-model-deployment"]
            assert deployment == route(key, SPLIT)  # the server routes as the pure function
            seen[key] = deployment
            request_id = response.headers["x-request-id"]
            predictions[request_id] = response.json()
            labels[request_id] = int(registry.labels[row])
        # The same key, again: the same deployment.
        for i in range(0, 300, 7):
            key = f"customer-{i}"
            again = http.post(SCORE, json=payload(registry, 0), headers={"x-request-key": key})
            assert again.headers["azureml-model-deployment"] == seen[key]
            predictions[again.headers["x-request-id"]] = again.json()
        feedback = [{"request_id": rid, "label": label} for rid, label in labels.items()]
        assert http.post(FEEDBACK, json={"feedback": feedback}).status_code == 202
    endpoint.flush_records()
    end = datetime.now(UTC) + timedelta(seconds=1)

    counts = Counter(seen.values())
    assert counts["bc-v2"] == sum(route(f"customer-{i}", SPLIT) == "bc-v2" for i in range(300))
    assert 0.05 <= counts["bc-v2"] / 300 <= 0.15

    live = collect_local_live_metrics(
        server.records_path(ENDPOINT),
        registry.tracking_uri,
        "p-http",
        0,
        ["bc-v1", "bc-v2"],
        start,
        end,
    )
    repeats = Counter(seen[f"customer-{i}"] for i in range(0, 300, 7))
    for name in ("bc-v1", "bc-v2"):
        arm = live.arms[name]
        assert arm.requests == counts[name] + repeats[name]
        assert arm.errors == 0
        assert arm.labeled == counts[name]  # only the first 300 got a label
        ids = [rid for rid in labels if _deployment_of(server, rid) == name]
        assert arm.correct == sum(is_correct(predictions[rid], labels[rid]) for rid in ids)
        assert len(arm.latency_ms) == arm.requests and min(arm.latency_ms) > 0
    endpoint.set_traffic({"bc-v1": 100})


def _deployment_of(server: Server, request_id: str) -> str:
    with sqlite3.connect(server.records_path(ENDPOINT)) as conn:
        return conn.execute(
            "SELECT deployment FROM records WHERE request_id = ? AND mirrored = 0", (request_id,)
        ).fetchone()[0]


def test_the_pin_header_overrides_the_split(
    server: Server, endpoint: LocalEndpoint, registry: Registry
) -> None:
    endpoint.set_traffic({"bc-v1": 100})
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        for i in range(20):
            response = http.post(
                SCORE,
                json=payload(registry, i),
                headers={"x-request-key": f"k{i}", "azureml-model-deployment": "bc-v2"},
            )
            assert response.status_code == 200
            assert response.headers["azureml-model-deployment"] == "bc-v2"
        unpinned = http.post(SCORE, json=payload(registry, 0), headers={"x-request-key": "k0"})
        assert unpinned.headers["azureml-model-deployment"] == "bc-v1"
        missing = http.post(
            SCORE, json=payload(registry, 0), headers={"azureml-model-deployment": "nope-v1"}
        )
        assert missing.status_code == 404
        # the key may also come in the body
        in_body = {**payload(registry, 0), "request_key": "customer-3"}
        endpoint.set_traffic(SPLIT)
        routed = http.post(SCORE, json=in_body)
        assert routed.headers["azureml-model-deployment"] == route("customer-3", SPLIT)
        assert http.post(SCORE, json={"nothing": 1}).status_code == 400
    endpoint.set_traffic({"bc-v1": 100})


def test_mirrored_requests_are_recorded_and_going_live_ends_the_mirror(
    server: Server, endpoint: LocalEndpoint, registry: Registry
) -> None:
    endpoint.set_traffic({"bc-v1": 100})
    endpoint.set_mirror({"bc-v2": 50})
    assert endpoint.mirror() == {"bc-v2": 50}
    with pytest.raises(InvalidTraffic, match="live traffic"):
        endpoint.set_mirror({"bc-v1": 10})
    with httpx.Client(base_url=server.url, headers=server.headers) as http:
        ids = []
        for i in range(40):
            response = http.post(
                SCORE, json=payload(registry, i), headers={"x-request-key": f"m{i}"}
            )
            assert response.headers["azureml-model-deployment"] == "bc-v1"
            ids.append(response.headers["x-request-id"])
    endpoint.flush_records()
    with sqlite3.connect(server.records_path(ENDPOINT)) as conn:
        marks = ",".join("?" * len(ids))
        shadow = conn.execute(
            f"SELECT deployment, status, outputs FROM records "
            f"WHERE mirrored = 1 AND request_id IN ({marks})",
            ids,
        ).fetchall()
    assert 8 <= len(shadow) <= 32  # about half of 40
    assert {row[0] for row in shadow} == {"bc-v2"} and {row[1] for row in shadow} == {200}
    endpoint.set_traffic({"bc-v1": 90, "bc-v2": 10})
    assert endpoint.mirror() == {}
    endpoint.set_traffic({"bc-v1": 100})


def test_the_cli_server_in_a_subprocess(registry: Registry, tmp_path) -> None:
    from endpoint_server import start_local_endpoint

    with start_local_endpoint(
        tmp_path, registry.tracking_uri, subprocess_mode=True, max_lifetime=120
    ) as handle:
        assert handle.url.startswith("http://127.0.0.1:")
        with LocalEndpoint(handle.url, ENDPOINT, key=handle.key) as ep:
            ep.deploy(registry.model, "2", "sub-v2")
            assert wait_until_done(ep, "sub-v2").state == "succeeded"
            ep.set_traffic({"sub-v2": 100})
            assert ep.traffic() == {"sub-v2": 100}
    # the control plane survives a restart (state file in the data dir)
    with (
        start_local_endpoint(tmp_path, registry.tracking_uri, max_lifetime=120) as again,
        LocalEndpoint(again.url, ENDPOINT, key=again.key) as ep,
    ):
        assert ep.traffic() == {"sub-v2": 100}
        assert wait_until_done(ep, "sub-v2").model_version == "2"


def test_the_reconcile_pass_sees_hand_made_drift_on_the_real_endpoint_and_repairs_it(
    server: Server, registry: Registry
) -> None:
    """Traffic moved and then the serving deployment deleted behind the app's back, over the
    server's own HTTP API: each is seen in one timer pass and put back."""
    import time

    from promotion.state import PromotionState, ServingModel
    from tests.fakes import fake_runtime, policy_yaml

    name = "drift-ep"
    with LocalEndpoint(server.url, name, key=server.key) as port:
        port.deploy(registry.model, "1", "drift-v1")
        port.deploy(registry.model, "2", "drift-v2")
        assert wait_until_done(port, "drift-v1").state == "succeeded"
        assert wait_until_done(port, "drift-v2").state == "succeeded"
        port.set_traffic({"drift-v1": 100})
        model = registry.model
        w = fake_runtime(policy_yaml(model), endpoint=port)
        serving = ServingModel(version="1", deployment="drift-v1", since=w.clock())
        w.store.seed(
            model,
            lambda a: a.model_copy(
                update={"promotion": PromotionState(champion=serving, last_known_good=serving)}
            ),
        )
        assert w.runtime.maintenance.sweep()["drift"] == []

        by_hand = httpx.Client(base_url=server.url, headers=server.headers)
        by_hand.put(f"/{name}/traffic", json={"traffic": {"drift-v1": 50, "drift-v2": 50}})
        [drift] = w.runtime.maintenance.sweep()["drift"]
        assert "drift-v2" in drift["summary"]
        assert port.traffic() == {"drift-v1": 100}

        assert by_hand.delete(f"/{name}/deployments/drift-v1").status_code == 204
        assert port.traffic() == {}
        [drift] = w.runtime.maintenance.sweep()["drift"]
        assert "missing drift-v1" in drift["summary"]
        for _ in range(200):  # redeployed: the server loads it, then the traffic follows
            w.runtime.maintenance.sweep()
            if port.traffic() == {"drift-v1": 100}:
                break
            time.sleep(0.05)
        assert port.traffic() == {"drift-v1": 100}
        # Drift seen, repaired (redeployed, then its traffic put back), then cleared.
        w.runtime.maintenance.sweep()
        actions = [r.action for r in w.audit.read(model)]
        assert actions[:2] == ["endpoint.drift", "endpoint.repair"]
        assert actions[-1] == "endpoint.drift_resolved"
        by_hand.close()
