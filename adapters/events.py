"""Lifecycle events (promoted, rolled back, approval requested, ...) for the outside world.

Azure: an Event Hub (azure-eventhub, DefaultAzureCredential). Local: an Azurite queue with
the same name, so a person or a test can read what was published.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.storage.queue import QueueClient

from adapters.storage_queue_bus import encode_body

if TYPE_CHECKING:
    from azure.eventhub import EventData, EventHubProducerClient


def event_document(event_type: str, model: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event_type,
        "model": model,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }


class QueueEventPublisher:
    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def publish(self, event_type: str, model: str, data: dict[str, Any]) -> None:
        self._queue.send_message(encode_body(event_document(event_type, model, data)))


def build_event(event_type: str, model: str, data: dict[str, Any]) -> EventData:
    from azure.eventhub import EventData

    event = EventData(json.dumps(event_document(event_type, model, data), default=str))
    event.content_type = "application/json"
    event.properties = {"type": event_type, "model": model}
    return event


class EventHubPublisher:
    def __init__(self, producer: EventHubProducerClient) -> None:
        self._producer = producer

    @classmethod
    def connect(
        cls, hub: str, *, namespace: str | None = None, connection_string: str | None = None
    ) -> EventHubPublisher:
        from azure.eventhub import EventHubProducerClient

        if connection_string:
            producer = EventHubProducerClient.from_connection_string(
                connection_string, eventhub_name=hub
            )
        elif namespace:
            from adapters.azure_credential import azure_credential

            producer = EventHubProducerClient(namespace, hub, azure_credential())
        else:
            raise ValueError("Event Hubs needs a namespace or a connection string")
        return cls(producer)

    def publish(self, event_type: str, model: str, data: dict[str, Any]) -> None:
        # Partition by model: one model's lifecycle stays in order for consumers.
        self._producer.send_event(build_event(event_type, model, data), partition_key=model)
