"""Settings: the Functions host's names, which adapters they select, and clear failures."""

from __future__ import annotations

import pytest

from orchestrator.settings import SettingsError, load_settings

AZURITE = "UseDevelopmentStorage=true"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (
        "AzureWebJobsStorage",
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__accountName",
        "ServiceBusConnection__fullyQualifiedNamespace",
        "ServiceBusConnection",
        "EventHubConnection__fullyQualifiedNamespace",
        "AZUREML_SUBSCRIPTION_ID",
        "AZUREML_RESOURCE_GROUP",
        "AZUREML_WORKSPACE",
        "MAX_DELIVERIES",
        "MLFLOW_TRACKING_URI",
    ):
        monkeypatch.delenv(name, raising=False)


def test_local_defaults(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", AZURITE)
    settings = load_settings()
    assert not settings.uses_service_bus
    assert not settings.uses_azureml
    assert settings.tracking_uri.startswith("sqlite:///")
    assert settings.orchestrator_queue == "orchestrator"


def test_identity_based_azure(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage__blobServiceUri", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace", "ns.servicebus.windows.net")
    monkeypatch.setenv("AZUREML_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZUREML_RESOURCE_GROUP", "rg")
    monkeypatch.setenv("AZUREML_WORKSPACE", "ws")
    monkeypatch.setenv("MESSAGE_SIGNING_KEY", "k" * 64)
    settings = load_settings()
    assert settings.uses_service_bus and settings.uses_azureml
    assert settings.storage_connection_string is None


@pytest.mark.parametrize(
    ("missing", "named"),
    [("MESSAGE_SIGNING_KEY", "MESSAGE_SIGNING_KEY"), ("ENTRA_TENANT_ID", "ENTRA_TENANT_ID")],
)
def test_in_azure_no_key_or_issuer_is_made_up_locally(monkeypatch, missing, named):
    monkeypatch.setenv("AzureWebJobsStorage__blobServiceUri", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "0123abcd")  # what the platform sets
    monkeypatch.setenv("MESSAGE_SIGNING_KEY", "k" * 64)
    monkeypatch.setenv("ENTRA_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("ENTRA_API_AUDIENCE", "api://retrain-orchestrator")
    assert load_settings().website_instance_id == "0123abcd"
    monkeypatch.delenv(missing)
    if missing == "ENTRA_TENANT_ID":
        monkeypatch.delenv("ENTRA_API_AUDIENCE")
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_service_bus_without_a_signing_key_fails_at_start_naming_it(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage__blobServiceUri", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace", "ns.servicebus.windows.net")
    monkeypatch.delenv("MESSAGE_SIGNING_KEY", raising=False)
    with pytest.raises(SettingsError, match="MESSAGE_SIGNING_KEY"):
        load_settings()


def test_identity_based_storage_by_account_name_alone(monkeypatch):
    # What the Functions host itself accepts: the public cloud's URIs follow from the account.
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "retrainstate")
    settings = load_settings()
    assert settings.storage_blob_uri == "https://retrainstate.blob.core.windows.net"
    assert settings.storage_queue_uri == "https://retrainstate.queue.core.windows.net"
    assert settings.storage_connection_string is None


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({}, "AzureWebJobsStorage"),
        ({"AzureWebJobsStorage": "hello"}, "AzureWebJobsStorage: is not a storage connection"),
        (
            {"AzureWebJobsStorage__blobServiceUri": "acct.blob.core.windows.net"},
            "AzureWebJobsStorage__blobServiceUri: must be an http(s) URL",
        ),
        (
            {"AzureWebJobsStorage__accountName": "Not_An-Account"},
            "AzureWebJobsStorage__accountName",
        ),
        ({"AzureWebJobsStorage": AZURITE, "MAX_DELIVERIES": "many"}, "MAX_DELIVERIES"),
        ({"AzureWebJobsStorage": AZURITE, "MAX_DELIVERIES": "0"}, "MAX_DELIVERIES"),
        ({"AzureWebJobsStorage": AZURITE, "AZUREML_WORKSPACE": "ws"}, "AZUREML_SUBSCRIPTION_ID"),
        (
            {
                "AzureWebJobsStorage": AZURITE,
                "ServiceBusConnection__fullyQualifiedNamespace": "sb://ns.servicebus.windows.net/",
            },
            "ServiceBusConnection__fullyQualifiedNamespace: must be a fully qualified namespace",
        ),
        (
            {"AzureWebJobsStorage": AZURITE, "EventHubConnection__fullyQualifiedNamespace": "ns"},
            "EventHubConnection__fullyQualifiedNamespace: must be a fully qualified namespace",
        ),
    ],
)
def test_bad_settings_fail_naming_the_setting(monkeypatch, environment, named):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert named in str(caught.value)
