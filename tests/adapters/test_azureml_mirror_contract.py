"""The shadow's mirror read back from Azure ML (OnlineEndpoint.mirror, used by the reconcile
pass), against the real azure-ai-ml SDK on the recording transport."""

from __future__ import annotations

import pytest

from adapters.azureml_endpoint import AzureMLEndpoint, make_ml_client
from orchestrator.ports import DeploymentBusy
from tests.adapters.azureml_endpoint_replay import RG, SUB, WS, WS_ID, FakeAzureML
from tests.azure_recording import FakeCredential

EP = "churn-ep"
EP_PATH = f"{WS_ID}/onlineEndpoints/{EP}"


@pytest.fixture
def azure() -> FakeAzureML:
    transport = FakeAzureML()
    transport.add_endpoint(EP, traffic={"churn-v1": 100}, mirror={"churn-v2": 20})
    transport.add_deployment(EP, "churn-v1", "churn", "1")
    transport.add_deployment(EP, "churn-v2", "churn", "2")
    return transport


@pytest.fixture
def endpoint(azure: FakeAzureML) -> AzureMLEndpoint:
    client = make_ml_client(SUB, RG, WS, FakeCredential(), transport=azure)
    return AzureMLEndpoint(lambda: client, EP, "Standard_DS3_v2", 2)


def test_the_mirror_is_read_from_the_endpoints_mirror_traffic(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    assert endpoint.mirror() == {"churn-v2": 20}
    assert {r.method for r in azure.requests} == {"GET"}  # the endpoint and its deployments
    assert azure.requests[0].path == EP_PATH


def test_mirror_off_reads_back_as_none_once_the_update_is_done(
    azure: FakeAzureML, endpoint: AzureMLEndpoint
) -> None:
    endpoint.set_mirror({})
    [put] = azure.sent("PUT", EP_PATH)
    assert put.body["properties"]["mirrorTraffic"] == {}
    assert put.body["properties"]["traffic"] == {"churn-v1": 100}
    with pytest.raises(DeploymentBusy):  # mid-update the map read back may be the old one
        endpoint.mirror()
    azure.finish_updates()
    assert endpoint.mirror() == {}
