"""Small storage helpers shared by the trigger pollers and output bindings."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient

from adapters.storage_queue_bus import ensure_queue


def ensure_container(service: BlobServiceClient, name: str) -> ContainerClient:
    container = service.get_container_client(name)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return container


def ensure_queue_client(service: QueueServiceClient, name: str) -> QueueClient:
    return ensure_queue(service.get_queue_client(name))
