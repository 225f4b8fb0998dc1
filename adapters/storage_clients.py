"""The Storage clients the app's state, queues and dead letters use, from its settings.

A connection string (Azurite locally; `UseDevelopmentStorage=true` as the host reads it), or
the account's URIs with the app's identity (`adapters.azure_credential`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.azure_credential import azure_credential

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from orchestrator.settings import Settings


def blob_service(settings: Settings) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(
            _resolve_dev_storage(settings.storage_connection_string)
        )
    assert settings.storage_blob_uri
    return BlobServiceClient(settings.storage_blob_uri, credential=azure_credential())


def queue_service(settings: Settings) -> QueueServiceClient:
    from azure.storage.queue import QueueServiceClient

    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(
            _resolve_dev_storage(settings.storage_connection_string)
        )
    uri = settings.storage_queue_uri or str(settings.storage_blob_uri).replace(".blob.", ".queue.")
    return QueueServiceClient(uri, credential=azure_credential())


def _resolve_dev_storage(connection_string: str) -> str:
    """`UseDevelopmentStorage=true` means Azurite on its default ports, as the host reads it."""
    if connection_string.strip().lower() != "usedevelopmentstorage=true":
        return connection_string
    from adapters.azurite import DEV_ACCOUNT, DEV_KEY

    host = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={host}:10000/{DEV_ACCOUNT};QueueEndpoint={host}:10001/{DEV_ACCOUNT};"
        f"TableEndpoint={host}:10002/{DEV_ACCOUNT};"
    )
