"""Where data may come from, in the service layer: the data account the settings derive
(`Settings.data_blob_endpoint`, `data_account`) and the handlers' check of RetrainRequested
and DataLanded (orchestrator/data_sources.py), on in-memory fakes."""

from __future__ import annotations

import pytest

from domain.data_location import DataAccount
from orchestrator.handlers import Outcome
from orchestrator.messages import InvalidMessage
from orchestrator.settings import SettingsError, load_settings
from retrain.commands import DataItem, DataLanded, RetrainRequested
from tests.fakes import DATA_ACCOUNT, FakeWorld, fake_runtime, fake_settings, message

AZURITE_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=<key>;"
    "BlobEndpoint=http://127.0.0.1:41234/devstoreaccount1;"
)
GOOD = f"{DATA_ACCOUNT}/training-data/churn/extra.csv"
CHINA = "AccountName=data2;AccountKey=<k>;EndpointSuffix=core.chinacloudapi.cn"
SAS = "sv=2024-08-04&sr=b&sp=r&sig=not-a-real-sas-signature"


# --------------------------------------------------------------------------- the data account


@pytest.mark.parametrize(
    ("values", "endpoint"),
    [
        # The DataStorage connection, as the blob trigger reads it.
        ({"DataStorage": "UseDevelopmentStorage=true"}, "http://127.0.0.1:10000/devstoreaccount1"),
        ({"DataStorage": AZURITE_STRING}, "http://127.0.0.1:41234/devstoreaccount1"),
        (
            {"DataStorage": "DefaultEndpointsProtocol=https;AccountName=data1;AccountKey=<k>"},
            "https://data1.blob.core.windows.net",
        ),
        (
            {"DataStorage": CHINA},
            "https://data2.blob.core.chinacloudapi.cn",
        ),
        (
            {"DataStorage__blobServiceUri": "https://data3.blob.core.windows.net/"},
            "https://data3.blob.core.windows.net",
        ),
        (
            {"DataStorage__blobServiceUri": None, "DataStorage__accountName": "data4"},
            "https://data4.blob.core.windows.net",
        ),
        # No DataStorage: the app's own storage, as devhost and the CLI read it.
        ({"DataStorage__blobServiceUri": None}, "http://127.0.0.1:9/fakeaccount"),
        (
            {
                "DataStorage__blobServiceUri": None,
                "AzureWebJobsStorage": None,
                "AzureWebJobsStorage__accountName": "appstate",
            },
            "https://appstate.blob.core.windows.net",
        ),
    ],
)
def test_the_data_account_comes_from_the_data_storage_connection(
    values: dict[str, str | None], endpoint: str
) -> None:
    settings = fake_settings(**values)
    assert settings.data_blob_endpoint == endpoint
    assert settings.data_account == DataAccount(endpoint, allow_local_paths=False)


def test_local_paths_need_the_development_setting() -> None:
    assert not fake_settings().allow_local_data_paths
    assert fake_settings(ALLOW_LOCAL_DATA_PATHS="true").data_account.allow_local_paths
    azureml = {
        "AZUREML_SUBSCRIPTION_ID": "s",
        "AZUREML_RESOURCE_GROUP": "g",
        "AZUREML_WORKSPACE": "w",
    }
    with pytest.raises(SettingsError, match="ALLOW_LOCAL_DATA_PATHS is for development only"):
        load_settings(
            AzureWebJobsStorage="UseDevelopmentStorage=true", ALLOW_LOCAL_DATA_PATHS="1", **azureml
        )


# --------------------------------------------------------------------------- the handlers


REFUSED = [
    "file:///data/churn/x.csv",
    "/data/churn/x.csv",
    "https://evil.blob.core.windows.net/training-data/churn/x.csv",
    f"{DATA_ACCOUNT}/other/churn/x.csv",
    f"{DATA_ACCOUNT}/training-data/fraud/x.csv",
    f"{DATA_ACCOUNT}/training-data/churn/../fraud/x.csv",
    f"{DATA_ACCOUNT}/training-data/churn/%2e%2e/fraud/x.csv",
    f"{GOOD}?{SAS}",
    f"{GOOD}#x",
    GOOD.replace("https://", "http://"),
    GOOD.replace("https://", "https://user:pw@"),
]


def retrain(world: FakeWorld, data_uri: str, force: bool = False) -> Outcome:
    """RetrainRequested as the HTTP API hands it to the handlers (its caller authenticated)."""
    request = RetrainRequested(
        run_id="churn-manual-1", data_uri=data_uri, force=force, requested_by="bob"
    )
    return world.handlers.handle(message("RetrainRequested", "churn", request), verified_by="http")


@pytest.mark.parametrize("uri", REFUSED)
def test_a_retrain_request_for_data_elsewhere_is_an_invalid_message(uri: str) -> None:
    world = fake_runtime()
    with pytest.raises(InvalidMessage, match=r"^data_uri: "):
        retrain(world, uri)
    assert not world.store.exists("churn")  # refused before anything was decided or stored
    assert world.audit.read("churn") == [] and world.training.submissions == []


@pytest.mark.parametrize("uri", REFUSED)
def test_a_data_landed_item_from_elsewhere_is_an_invalid_message(uri: str) -> None:
    world = fake_runtime()
    items = [DataItem(uri=GOOD, key="blob:a@1"), DataItem(uri=uri, key="blob:b@1")]
    with pytest.raises(InvalidMessage, match=r"^items\.1\.uri: "):
        world.handle(message("DataLanded", "churn", DataLanded(items=items)))
    assert not world.store.exists("churn")


def test_data_from_the_data_account_is_taken_normalized() -> None:
    world = fake_runtime()
    shouted = GOOD.replace("https://acct.blob", "HTTPS://ACCT.BLOB")
    assert retrain(world, shouted, force=True).status == "applied"
    [submitted] = world.training.submissions
    assert submitted.data_uris == [GOOD]


def test_local_paths_are_taken_only_when_the_development_setting_is_on() -> None:
    world = fake_runtime(settings=fake_settings(ALLOW_LOCAL_DATA_PATHS="true"))
    assert retrain(world, "/data/x.csv", force=True).status == "applied"
    with pytest.raises(InvalidMessage, match="SAS token"):  # still: no SAS token
        retrain(world, f"{GOOD}?{SAS}")
