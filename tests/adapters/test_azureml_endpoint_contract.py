"""AzureMLEndpoint against the real azure-ai-ml SDK; a recording transport answers for Azure.

The assertions are on the REST requests the SDK really sent (method, path, JSON body) and on
how canned provisioning states read back through the port.
"""

from __future__ import annotations

import pytest

from adapters.azureml_endpoint import DEFAULT_RETRY, AzureMLEndpoint, make_ml_client
from domain.policy import parse_policy
from orchestrator.bootstrap import bootstrap
from orchestrator.ports import (
    DeploymentBusy,
    EndpointError,
    InvalidDeploymentName,
    InvalidTraffic,
    OnlineEndpoint,
)
from promotion.state import PromotionState, ServingModel
from tests.adapters.azureml_endpoint_replay import RG, SUB, WS, WS_ID, FakeAzureML
from tests.azure_recording import Canned, FakeCredential
from tests.fakes import fake_runtime, fake_settings, policy_yaml

EP = "churn-ep"
EP_PATH = f"{WS_ID}/onlineEndpoints/{EP}"


@pytest.fixture
def azure() -> FakeAzureML:
    transport = FakeAzureML()
    transport.add_endpoint(EP, traffic={"churn-v2": 100})
    transport.add_deployment(EP, "churn-v2", "churn", "2")
    return transport


@pytest.fixture
def endpoint(azure: FakeAzureML) -> AzureMLEndpoint:
    client = make_ml_client(SUB, RG, WS, FakeCredential(), transport=azure)
    return AzureMLEndpoint(lambda: client, EP, "Standard_DS3_v2", 2)


def test_the_adapter_implements_the_port(endpoint: AzureMLEndpoint) -> None:
    assert isinstance(endpoint, OnlineEndpoint)


def test_deploy_puts_a_managed_deployment_of_the_registered_model_with_data_collection(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    assert endpoint.deploy("churn", "3", "churn-v3") == "churn-v3"

    [put] = azure.sent("PUT", f"{EP_PATH}/deployments/churn-v3")
    assert put.path == f"{EP_PATH}/deployments/churn-v3"
    props = put.body["properties"]
    assert props["model"] == f"{WS_ID}/models/churn/versions/3"
    assert props["endpointComputeType"] == "Managed"
    assert props["instanceType"] == "Standard_DS3_v2"
    assert put.body["sku"]["capacity"] == 2
    collections = props["dataCollector"]["collections"]
    assert set(collections) == {"model_inputs", "model_outputs"}
    for name, collection in collections.items():
        assert collection["dataCollectionMode"] == "enabled"
        assert collection["samplingRate"] == 1.0
        assert collection["dataId"] == f"{WS_ID}/data/{EP}-churn-v3-{name}/versions/1"
    # the SDK registers the collected data as data assets before the deployment
    registered = azure.sent("PUT", "/data/")
    assert [r.body["properties"]["dataUri"] for r in registered] == [
        f"azureml://datastores/workspaceblobstore/paths/modelDataCollector/{EP}/churn-v3/{c}"
        for c in ("model_inputs", "model_outputs")
    ]
    # it started the operation and did not wait for it: the state is still Creating
    assert endpoint.deployment_state("churn-v3").state == "creating"


def test_deploying_the_same_version_again_sends_no_put(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    endpoint.deploy("churn", "2", "churn-v2")
    assert azure.sent("PUT") == []
    assert [r.method for r in azure.requests] == ["GET"]
    assert azure.requests[0].path == f"{EP_PATH}/deployments/churn-v2"


def test_a_failed_deployment_is_deployed_again(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.add_deployment(EP, "churn-v4", "churn", "4", state="Failed")
    endpoint.deploy("churn", "4", "churn-v4")
    assert len(azure.sent("PUT", f"{EP_PATH}/deployments/churn-v4")) == 1


@pytest.mark.parametrize(
    ("provisioning", "state"),
    [
        ("Creating", "creating"),
        ("Updating", "creating"),
        ("Scaling", "creating"),
        ("Succeeded", "succeeded"),
        ("Failed", "failed"),
        ("Canceled", "failed"),
        ("Deleting", "deleting"),
    ],
)
def test_provisioning_states_map_to_the_port(
    azure: FakeAzureML, endpoint: AzureMLEndpoint, provisioning: str, state: str
) -> None:
    azure.add_deployment(EP, "churn-v5", "churn", "5", state=provisioning)
    status = endpoint.deployment_state("churn-v5")
    assert (status.state, status.model_name, status.model_version) == (state, "churn", "5")
    assert (status.error is not None) == (state == "failed")
    [get] = azure.requests
    assert (get.method, get.path) == ("GET", f"{EP_PATH}/deployments/churn-v5")


def test_a_missing_deployment_reads_as_missing(endpoint: AzureMLEndpoint) -> None:
    assert endpoint.deployment_state("churn-v9").state == "missing"


def test_set_traffic_puts_the_endpoint_with_the_whole_split(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.add_endpoint(EP, traffic={"churn-v2": 100}, mirror={"churn-v3": 20})
    endpoint.set_traffic({"churn-v2": 90, "churn-v3": 10})
    assert [(r.method, r.path) for r in azure.requests] == [
        ("GET", EP_PATH),
        ("GET", f"{EP_PATH}/deployments"),  # the SDK's get() lists the deployments too
        ("GET", WS_ID),  # the SDK reads the workspace location
        ("PUT", EP_PATH),
    ]
    body = azure.requests[-1].body
    assert body["properties"]["traffic"] == {"churn-v2": 90, "churn-v3": 10}
    assert body["properties"]["mirrorTraffic"] == {}  # churn-v3 went live: no more shadow
    with pytest.raises(DeploymentBusy):  # the update is being applied: no split to read yet
        endpoint.traffic()
    azure.finish_updates()
    assert endpoint.traffic() == {"churn-v2": 90, "churn-v3": 10}

    endpoint.set_traffic({"churn-v3": 100})  # absolute: churn-v2, left out, gets 0
    [_, second] = azure.sent("PUT", EP_PATH)
    assert second.body["properties"]["traffic"] == {"churn-v3": 100}
    azure.finish_updates()
    assert endpoint.traffic() == {"churn-v3": 100}


def test_set_mirror_puts_mirror_traffic(azure: FakeAzureML, endpoint: AzureMLEndpoint) -> None:
    azure.add_deployment(EP, "churn-v3", "churn", "3")
    endpoint.set_mirror({"churn-v3": 10})
    [put] = azure.sent("PUT", EP_PATH)
    assert put.body["properties"]["mirrorTraffic"] == {"churn-v3": 10}
    assert put.body["properties"]["traffic"] == {"churn-v2": 100}
    with pytest.raises(InvalidTraffic, match="live traffic"):
        endpoint.set_mirror({"churn-v2": 10})


def test_invalid_maps_and_names_send_nothing(azure: FakeAzureML, endpoint: AzureMLEndpoint) -> None:
    with pytest.raises(InvalidTraffic, match="sum to 100"):
        endpoint.set_traffic({"churn-v2": 90})
    with pytest.raises(InvalidTraffic, match="integer"):
        endpoint.set_traffic({"churn-v2": 90.0, "churn-v3": 10})  # type: ignore[dict-item]
    with pytest.raises(InvalidTraffic, match=r"0\.\.50"):
        endpoint.set_mirror({"churn-v3": 60})
    with pytest.raises(InvalidDeploymentName):
        endpoint.deploy("churn", "3", "churn_v3")
    with pytest.raises(InvalidDeploymentName):
        endpoint.delete("3churn")
    assert azure.requests == []


def test_traffic_to_a_deployment_the_endpoint_does_not_have_is_not_put(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    with pytest.raises(InvalidTraffic, match="do not exist"):
        endpoint.set_traffic({"churn-v2": 90, "churn-v9": 10})
    with pytest.raises(InvalidTraffic, match="do not exist"):
        endpoint.set_mirror({"churn-v9": 10})
    assert azure.sent("PUT") == []


def test_delete_sends_a_delete_and_a_missing_deployment_is_fine(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.add_deployment(EP, "churn-v1", "churn", "1")
    endpoint.delete("churn-v1")
    assert [r.path for r in azure.sent("DELETE")] == [f"{EP_PATH}/deployments/churn-v1"]
    assert endpoint.deployment_state("churn-v1").state == "deleting"
    endpoint.delete("churn-v8")  # not there: no error
    assert azure.sent("DELETE")[-1].path == f"{EP_PATH}/deployments/churn-v8"


def test_a_rollback_deletes_the_candidate_only_once_the_traffic_update_is_done(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.add_deployment(EP, "churn-v3", "churn", "3")
    azure.add_endpoint(EP, traffic={"churn-v2": 75, "churn-v3": 25})
    endpoint.set_traffic({"churn-v2": 100})  # started, not awaited: the endpoint is Updating
    with pytest.raises(EndpointError, match="Updating") as busy:
        endpoint.delete("churn-v3")
    assert busy.value.transient is True  # the outbox keeps the effect and tries again
    assert azure.sent("DELETE") == []
    azure.finish_updates()
    endpoint.delete("churn-v3")
    assert [r.path for r in azure.sent("DELETE")] == [f"{EP_PATH}/deployments/churn-v3"]


def test_deleting_the_only_serving_deployment_takes_its_traffic_away_first(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    with pytest.raises(DeploymentBusy, match="the only one") as serving:
        endpoint.delete("churn-v2")
    assert serving.value.transient is True
    [put] = azure.sent("PUT", EP_PATH)
    assert put.body["properties"]["traffic"] == {}
    assert azure.sent("DELETE") == []
    with pytest.raises(EndpointError, match="Updating"):
        endpoint.delete("churn-v2")  # the outbox's next try, while the update runs
    azure.finish_updates()
    endpoint.delete("churn-v2")
    assert [r.path for r in azure.sent("DELETE")] == [f"{EP_PATH}/deployments/churn-v2"]
    assert len(azure.sent("PUT", EP_PATH)) == 1


def test_traffic_that_did_not_move_is_a_loud_error_not_a_wait(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    # The rollback's traffic update is done, yet the candidate still takes traffic (the update
    # failed, or someone set it by hand): not deleted, nothing drained, said as an error.
    azure.add_deployment(EP, "churn-v3", "churn", "3")
    azure.add_endpoint(EP, traffic={"churn-v2": 75, "churn-v3": 25})
    with pytest.raises(EndpointError, match="still takes 25% of the live traffic") as stuck:
        endpoint.delete("churn-v3")
    assert not isinstance(stuck.value, DeploymentBusy) and stuck.value.transient is True
    assert azure.sent("DELETE") == [] and azure.sent("PUT") == []


def test_a_mirrored_deployment_loses_its_mirror_before_it_is_deleted(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.add_deployment(EP, "churn-v3", "churn", "3")
    azure.add_endpoint(EP, traffic={"churn-v2": 100}, mirror={"churn-v3": 10})
    with pytest.raises(DeploymentBusy, match="mirrored"):
        endpoint.delete("churn-v3")
    [put] = azure.sent("PUT", EP_PATH)
    assert put.body["properties"]["mirrorTraffic"] == {}
    assert put.body["properties"]["traffic"] == {"churn-v2": 100}
    azure.finish_updates()
    endpoint.delete("churn-v3")
    assert [r.path for r in azure.sent("DELETE")] == [f"{EP_PATH}/deployments/churn-v3"]


def test_a_deploy_while_another_operation_runs_is_transient(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.faults.append(
        (
            lambda r: r.method == "PUT" and "/deployments/" in r.path,
            Canned(409, {"error": {"code": "Conflict", "message": "an operation is in progress"}}),
        )
    )
    with pytest.raises(EndpointError, match="409 Conflict") as busy:
        endpoint.deploy("churn", "3", "churn-v3")
    assert busy.value.transient is True  # retried, and counted toward giving up


def test_a_refused_delete_carries_the_service_message(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.add_deployment(EP, "churn-v1", "churn", "1")
    azure.faults.append(
        (
            lambda r: r.method == "DELETE",
            Canned(403, {"error": {"code": "AuthorizationFailed", "message": "no delete"}}),
        )
    )
    with pytest.raises(EndpointError, match="403 AuthorizationFailed: no delete") as refused:
        endpoint.delete("churn-v1")
    assert refused.value.transient is False


def test_throttling_and_server_errors_are_retried_by_azure_core(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.fail_next = [429, 503, 500]
    assert endpoint.traffic() == {"churn-v2": 100}
    assert [r.path for r in azure.requests] == [EP_PATH] * 4 + [f"{EP_PATH}/deployments"]
    # first retry at once, then the exponential backoff of DEFAULT_RETRY (factor 1: 2 s, 4 s)
    assert azure.sleeps == [2.0, 4.0]

    azure.requests.clear()
    azure.sleeps.clear()
    azure.retry_after = "7"
    azure.fail_next = [429]
    endpoint.traffic()
    assert azure.sleeps == [7.0]  # the service's Retry-After wins
    assert DEFAULT_RETRY["retry_status"] >= 3


def test_deployments_lists_every_deployment_with_its_model_and_state(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    azure.add_deployment(EP, "churn-v3", "churn", "3", state="Creating")
    statuses = endpoint.deployments()
    assert [r.path for r in azure.sent("GET")] == [f"{EP_PATH}/deployments"]
    assert [(s.deployment, s.state, s.model_name, s.model_version) for s in statuses] == [
        ("churn-v2", "succeeded", "churn", "2"),
        ("churn-v3", "creating", "churn", "3"),
    ]


def test_the_reconcile_pass_reads_azure_ml_and_puts_back_a_split_changed_by_hand(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    """The whole pass through the real SDK: the endpoint read back, the drift audited, the
    state's traffic put again; the second pass reads it in line."""
    w = fake_runtime(policy_yaml("churn"), endpoint=endpoint)
    serving = ServingModel(version="2", deployment="churn-v2", since=w.clock())
    w.store.seed(
        "churn",
        lambda a: a.model_copy(
            update={"promotion": PromotionState(champion=serving, last_known_good=serving)}
        ),
    )
    azure.add_deployment(EP, "churn-v3", "churn", "3")
    azure.add_endpoint(EP, traffic={"churn-v2": 60, "churn-v3": 40})  # changed in the portal
    azure.requests.clear()

    [drift] = w.runtime.maintenance.sweep()["drift"]
    assert "churn-v3" in drift["summary"]
    [put] = azure.sent("PUT", EP_PATH)
    assert put.path == EP_PATH
    assert put.body["properties"]["traffic"] == {"churn-v2": 100}
    assert w.audit.actions("churn") == ["endpoint.drift", "endpoint.repair"]

    azure.finish_updates()  # Azure ML has applied the split
    assert w.runtime.maintenance.sweep()["drift"] == []
    assert w.aggregate("churn").promotion.drift is None


def test_an_endpoint_applying_an_update_is_not_compared_by_the_reconcile_pass(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    """Mid-update the split read back may be the old one: the pass looks again next time
    instead of calling that drift (and pausing a canary for nothing)."""
    w = fake_runtime(policy_yaml("churn"), endpoint=endpoint)
    serving = ServingModel(version="2", deployment="churn-v2", since=w.clock())
    w.store.seed(
        "churn",
        lambda a: a.model_copy(
            update={"promotion": PromotionState(champion=serving, last_known_good=serving)}
        ),
    )
    azure.add_deployment(EP, "churn-v3", "churn", "3")
    azure.add_endpoint(EP, traffic={"churn-v2": 60, "churn-v3": 40})
    azure.endpoints[EP]["properties"]["provisioningState"] = "Updating"
    with pytest.raises(DeploymentBusy):
        endpoint.traffic()
    assert w.runtime.maintenance.sweep()["drift"] == []
    assert azure.sent("PUT") == [] and w.audit.actions("churn") == []


# -------------------------------------------------------------------------- Kubernetes targets

K8S = "churn-k8s"
K8S_PATH = f"{WS_ID}/onlineEndpoints/{K8S}"


@pytest.fixture
def kubernetes(azure: FakeAzureML) -> AzureMLEndpoint:
    """The adapter as bootstrap builds it for `endpoint_target: {kind: kubernetes, ...}`."""
    azure.add_endpoint(K8S, traffic={"churn-v2": 100}, compute="aks-prod")
    azure.add_deployment(K8S, "churn-v2", "churn", "2")
    client = make_ml_client(SUB, RG, WS, FakeCredential(), transport=azure)
    return AzureMLEndpoint(lambda: client, K8S, "gpu-small", 3, kubernetes_compute="aks-prod")


def test_deploy_puts_a_kubernetes_deployment_with_the_compute_s_instance_type(
    azure: FakeAzureML, kubernetes: AzureMLEndpoint
) -> None:
    assert kubernetes.deploy("churn", "3", "churn-v3") == "churn-v3"

    # the endpoint is read first: a Kubernetes endpoint on the policy's compute
    assert [(r.method, r.path) for r in azure.requests[:2]] == [
        ("GET", f"{K8S_PATH}/deployments/churn-v3"),
        ("GET", K8S_PATH),
    ]
    [put] = azure.sent("PUT", f"{K8S_PATH}/deployments/churn-v3")
    props = put.body["properties"]
    assert props["endpointComputeType"] == "Kubernetes"
    assert props["instanceType"] == "gpu-small"  # an instance type the attached compute defines
    assert props["model"] == f"{WS_ID}/models/churn/versions/3"
    assert put.body["sku"]["capacity"] == 3
    assert set(props["dataCollector"]["collections"]) == {"model_inputs", "model_outputs"}
    # exactly these: no managed-only field (egress, private network) rides along
    assert set(props) == {
        "model",
        "properties",
        "environmentVariables",
        "appInsightsEnabled",
        "instanceType",
        "dataCollector",
        "endpointComputeType",
    }
    assert kubernetes.deployment_state("churn-v3").state == "creating"


def test_traffic_on_a_kubernetes_endpoint_keeps_its_compute(
    azure: FakeAzureML, kubernetes: AzureMLEndpoint
) -> None:
    azure.add_deployment(K8S, "churn-v3", "churn", "3")
    kubernetes.set_traffic({"churn-v2": 80, "churn-v3": 20})
    [put] = azure.sent("PUT", K8S_PATH)
    assert put.path == K8S_PATH
    # read back as a KubernetesOnlineEndpoint: PUT again with its compute, never as managed
    assert put.body["properties"]["compute"] == f"{WS_ID}/computes/aks-prod"
    assert put.body["properties"]["traffic"] == {"churn-v2": 80, "churn-v3": 20}


@pytest.mark.parametrize(
    ("compute", "reason"),
    [
        (None, "is a managed endpoint, not a Kubernetes endpoint on aks-prod"),
        ("aks-test", "is on compute aks-test, not a Kubernetes endpoint on aks-prod"),
    ],
)
def test_a_kubernetes_deployment_is_never_put_on_another_target(
    azure: FakeAzureML, kubernetes: AzureMLEndpoint, compute: str | None, reason: str
) -> None:
    azure.add_endpoint(K8S, traffic={"churn-v2": 100}, compute=compute)
    with pytest.raises(EndpointError, match=reason) as refused:
        kubernetes.deploy("churn", "3", "churn-v3")
    assert refused.value.transient is False  # a person fixes the target; not retried
    assert azure.sent("PUT") == []


def test_a_missing_kubernetes_endpoint_is_a_clear_refusal(
    azure: FakeAzureML, kubernetes: AzureMLEndpoint
) -> None:
    del azure.endpoints[K8S]
    with pytest.raises(EndpointError, match="does not exist: create it on the attached compute"):
        kubernetes.deploy("churn", "3", "churn-v3")
    assert azure.sent("PUT") == []


def test_a_managed_endpoint_is_not_read_before_its_deploy(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    endpoint.deploy("churn", "3", "churn-v3")
    # one endpoint GET: the SDK's own "endpoint exists" check (a Kubernetes target adds one)
    assert len([r for r in azure.sent("GET") if r.path == EP_PATH]) == 1
    [put] = azure.sent("PUT", f"{EP_PATH}/deployments/churn-v3")
    assert put.body["properties"]["endpointComputeType"] == "Managed"


def test_bootstrap_builds_each_model_s_endpoint_on_its_policy_s_target() -> None:
    settings = fake_settings(
        AZUREML_SUBSCRIPTION_ID=SUB,
        AZUREML_RESOURCE_GROUP=RG,
        AZUREML_WORKSPACE=WS,
        AZUREML_INSTANCE_TYPE="Standard_F4s_v2",
    )
    target = "endpoint_target: {kind: kubernetes, compute: aks-prod, instance_type: gpu-small}"
    policies = {
        "churn": policy_yaml("churn"),
        "fraud": policy_yaml("fraud") + target + "\n",
    }
    runtime = bootstrap(settings, policies={m: parse_policy(t) for m, t in policies.items()})
    managed = runtime.endpoint_for(runtime.policies["churn"])
    on_aks = runtime.endpoint_for(runtime.policies["fraud"])
    assert isinstance(managed, AzureMLEndpoint) and isinstance(on_aks, AzureMLEndpoint)
    assert (managed.kubernetes_compute, managed.instance_type) == (None, "Standard_F4s_v2")
    assert (on_aks.endpoint_name, on_aks.kubernetes_compute, on_aks.instance_type) == (
        "fraud-ep",
        "aks-prod",
        "gpu-small",
    )
