"""Output bindings: queue, Service Bus, Event Hubs and blob values a function sets or returns.

Service Bus and Event Hubs outputs go to the same local storage queues their triggers read
(or to the real service when the connection setting names one). HTTP outputs are read by
the HTTP server itself and are ignored here.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from devhost.host.connections import (
    MessagingConnection,
    blob_service,
    local_queue_name,
    messaging_connection,
    queue_service,
)
from devhost.host.discovery import FunctionSpec
from devhost.host.invoke import InvocationResult
from devhost.host.settings import DevHostError
from devhost.host.storage import ensure_container, ensure_queue_client

_EXPRESSION = re.compile(r"\{([^{}]+)\}")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if hasattr(value, "get_body"):
        return bytes(value.get_body())
    return json.dumps(value).encode()


def _messages(value: Any) -> list[bytes]:
    """One message per item when a list is set, as the host does for collectors."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [_as_bytes(item) for item in items]


def expand_path(path: str, binding_data: Mapping[str, str]) -> str:
    """Binding expressions in an output path: trigger data, `{rand-guid}`, `{DateTime}`."""

    def replace(match: re.Match[str]) -> str:
        key = match[1]
        if key.lower() == "rand-guid":
            return str(uuid.uuid4())
        if key.lower() == "datetime":
            return datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
        if key in binding_data:
            return binding_data[key]
        raise DevHostError(f"binding expression {{{key}}} in {path!r} has no value")

    return _EXPRESSION.sub(replace, path)


class OutputSink:
    """Sends what a function put on its output bindings."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __call__(
        self, spec: FunctionSpec, result: InvocationResult, binding_data: Mapping[str, str]
    ) -> None:
        for binding in spec.outputs:
            value = result.output(binding["name"])
            if value is None or binding["type"] == "http":
                continue
            senders = {
                "queue": self._send_queue,
                "serviceBus": self._send_service_bus,
                "eventHub": self._send_event_hub,
                "blob": self._send_blob,
            }
            senders[binding["type"]](binding, value, binding_data)

    def _send_queue(self, binding: dict, value: Any, _: Mapping[str, str]) -> None:
        service = queue_service(binding.get("connection"), self._environ)
        queue = ensure_queue_client(service, binding["queueName"])
        for message in _messages(value):
            queue.send_message(base64.b64encode(message).decode())

    def _send_service_bus(self, binding: dict, value: Any, _: Mapping[str, str]) -> None:
        name = binding.get("queueName") or binding["topicName"]
        real = messaging_connection(binding.get("connection"), self._environ)
        if real is not None:
            _send_to_service_bus(real, name, _messages(value))
            return
        self._send_local(name, _messages(value))

    def _send_event_hub(self, binding: dict, value: Any, _: Mapping[str, str]) -> None:
        real = messaging_connection(binding.get("connection"), self._environ)
        if real is not None:
            _send_to_event_hub(real, binding["eventHubName"], _messages(value))
            return
        self._send_local(binding["eventHubName"], _messages(value))

    def _send_blob(self, binding: dict, value: Any, binding_data: Mapping[str, str]) -> None:
        container, _, blob_name = expand_path(binding["path"], binding_data).partition("/")
        service = blob_service(binding.get("connection"), self._environ)
        client = ensure_container(service, container)
        client.upload_blob(blob_name, _as_bytes(value), overwrite=True)

    def _send_local(self, name: str, messages: list[bytes]) -> None:
        queue = ensure_queue_client(queue_service(None, self._environ), local_queue_name(name))
        for message in messages:
            queue.send_message(base64.b64encode(message).decode())


def _send_to_service_bus(connection: MessagingConnection, queue: str, bodies: list[bytes]) -> None:
    from azure.servicebus import ServiceBusMessage

    from devhost.host.messaging import service_bus_client

    with service_bus_client(connection) as client, client.get_queue_sender(queue) as sender:
        sender.send_messages([ServiceBusMessage(body) for body in bodies])


def _send_to_event_hub(connection: MessagingConnection, hub: str, bodies: list[bytes]) -> None:
    from azure.eventhub import EventData

    from devhost.host.messaging import event_hub_producer

    with event_hub_producer(connection, hub) as producer:
        batch = producer.create_batch()
        for body in bodies:
            batch.add(EventData(body))
        producer.send_batch(batch)
