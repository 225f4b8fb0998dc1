"""Clients from a binding's `connection` setting, read as the Functions host reads it.

A connection named `X` is either a connection string in setting `X`, or identity-based:
`X__blobServiceUri` / `X__queueServiceUri` / `X__serviceUri` / `X__accountName` for storage,
`X__fullyQualifiedNamespace` for Service Bus and Event Hubs (with the app's one credential,
`adapters.azure_credential.azure_credential()`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from adapters.azure_credential import azure_credential
from devhost.host.settings import DevHostError

HOST_STORAGE = "AzureWebJobsStorage"
_INVALID_QUEUE_CHARS = re.compile(r"[^a-z0-9-]+")


def _storage_connection_name(connection: str | None) -> str:
    return connection or HOST_STORAGE


def _storage_uri(name: str, service: str, environ: Mapping[str, str]) -> str | None:
    specific = environ.get(f"{name}__{service}ServiceUri")
    if specific:
        return specific
    generic = environ.get(f"{name}__serviceUri")
    if generic and service == "blob":
        return generic
    account = environ.get(f"{name}__accountName")
    if account:
        return f"https://{account}.{service}.core.windows.net"
    return None


def blob_service(connection: str | None, environ: Mapping[str, str]) -> BlobServiceClient:
    name = _storage_connection_name(connection)
    if environ.get(name):
        return BlobServiceClient.from_connection_string(environ[name])
    uri = _storage_uri(name, "blob", environ)
    if uri:
        return BlobServiceClient(uri, credential=azure_credential())
    raise DevHostError(_missing_storage(name))


def queue_service(connection: str | None, environ: Mapping[str, str]) -> QueueServiceClient:
    name = _storage_connection_name(connection)
    if environ.get(name):
        return QueueServiceClient.from_connection_string(environ[name])
    uri = _storage_uri(name, "queue", environ)
    if uri:
        return QueueServiceClient(uri, credential=azure_credential())
    raise DevHostError(_missing_storage(name))


def _missing_storage(name: str) -> str:
    return (
        f"storage connection {name!r} is not configured: set {name} (a connection string) "
        f"or {name}__blobServiceUri/{name}__queueServiceUri"
    )


@dataclass(frozen=True)
class MessagingConnection:
    """A Service Bus or Event Hubs connection, when the settings name a real one."""

    fully_qualified_namespace: str | None = None
    connection_string: str | None = None


def messaging_connection(
    connection: str | None, environ: Mapping[str, str]
) -> MessagingConnection | None:
    """The real Service Bus / Event Hubs behind `connection`, or None to use a local queue."""
    if not connection:
        return None
    namespace = environ.get(f"{connection}__fullyQualifiedNamespace")
    if namespace:
        return MessagingConnection(fully_qualified_namespace=namespace)
    value = environ.get(connection)
    if value and "Endpoint=" in value:
        return MessagingConnection(connection_string=value)
    return None


def local_queue_name(name: str) -> str:
    """The storage queue standing in for a Service Bus queue or an event hub.

    Storage queue names are 3-63 lower-case letters, digits and single dashes; other names
    are lower-cased and their other characters become dashes.
    """
    normalised = _INVALID_QUEUE_CHARS.sub("-", name.lower())
    normalised = re.sub("-{2,}", "-", normalised).strip("-")
    if not 3 <= len(normalised) <= 63:
        raise DevHostError(f"{name!r} cannot be mapped onto a storage queue name ({normalised!r})")
    return normalised
