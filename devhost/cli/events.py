"""`send-event`: data on the data-events hub, batched, as a producer or Event Grid sends it.

Each blob becomes one document of the schema `triggers/payloads.py` parses: an Event Grid
`Microsoft.Storage.BlobCreated` event (its key is the blob name + ETag, the same as the Event
Grid subscription's, so a blob reported both ways counts once) or a data-ready event
(`{"model", "data_uri", "event_id"}`, its key the event id). Documents are packed into events
as JSON arrays, up to the model's `max_items_per_event` (the app refuses a bigger event whole)
and `MAX_EVENT_BYTES`; events go to the hub the app reads (`DATA_EVENTS_HUB`): with Event Hubs
settings through the SDK's producer, in as few batches as its size limit allows; locally to
the storage queue devhost stands in for the hub with, one message an event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devhost.cli.commands import BadInput, data_blob_service, policy_for, send_data

if TYPE_CHECKING:
    from azure.eventhub import EventHubProducerClient
    from azure.storage.blob import ContainerClient

    from domain.policy import ModelPolicy
    from orchestrator.bootstrap import Runtime

EventFormat = Literal["event-grid", "data-ready"]
EVENT_FORMATS: tuple[EventFormat, ...] = ("event-grid", "data-ready")
# A storage queue message holds 64 KiB of base64, 48 KiB of JSON; Event Hubs takes 256 KB an
# event on its Basic tier, 1 MB above: one budget that fits every route.
MAX_EVENT_BYTES = 48 * 1024
_MAX_EVENT_ID = 200  # DataReadyEvent.event_id


@dataclass(frozen=True)
class NamedBlob:
    """A blob an event names: where it is and which version (its ETag)."""

    container: str
    name: str
    url: str
    etag: str
    size: int | None

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "blob": self.name, "url": self.url,
                "etag": self.etag, "size": self.size}  # fmt: skip


@dataclass(frozen=True)
class SentEvents:
    model: str
    format: EventFormat
    hub: str
    route: str  # "event-hubs" or "storage-queue:<name>"
    blobs: list[NamedBlob]
    events: int
    sends: int
    uploaded: int = 0
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "format": self.format,
            "hub": self.hub,
            "route": self.route,
            "items": len(self.blobs),
            "events": self.events,
            "sends": self.sends,
            "uploaded": self.uploaded,
            "blobs": [blob.to_json() for blob in self.blobs],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- documents


def blob_created_document(blob: NamedBlob) -> dict[str, Any]:
    """The Event Grid event (its JSON schema) the data account's subscription would send."""
    from devhost.host.pollers import blob_created_event

    event = blob_created_event(_container_url(blob), blob.name, blob.etag, blob.size)
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "data": event.get_json(),
        "dataVersion": event.data_version or "",
        "metadataVersion": "1",
    }


def _container_url(blob: NamedBlob) -> str:
    from urllib.parse import quote

    suffix = "/" + quote(blob.name)
    if not blob.url.endswith(suffix):
        raise BadInput(f"{blob.url}: not the URL of blob {blob.name!r}")
    return blob.url[: -len(suffix)]


def data_ready_document(model: str, blob: NamedBlob) -> dict[str, Any]:
    """A producer's data-ready event; its id names the blob's version, so sending the same
    blob again is a duplicate, and a rewritten blob is new data."""
    event_id = f"{blob.container}/{blob.name}@{blob.etag.strip(chr(34))}"
    if len(event_id) > _MAX_EVENT_ID:
        event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    return {"model": model, "data_uri": blob.url, "event_id": event_id}


def pack(documents: Sequence[dict[str, Any]], max_items: int, max_bytes: int) -> list[bytes]:
    """Event bodies: JSON arrays of at most `max_items` documents and `max_bytes` bytes."""
    bodies: list[bytes] = []
    chunk: list[bytes] = []
    size = 2  # the brackets

    def close() -> None:
        bodies.append(b"[" + b",".join(chunk) + b"]")

    for document in documents:
        encoded = json.dumps(document, separators=(",", ":")).encode()
        if len(encoded) + 2 > max_bytes:
            raise BadInput(f"one event document is {len(encoded)} bytes, over {max_bytes}")
        if chunk and (len(chunk) >= max_items or size + 1 + len(encoded) > max_bytes):
            close()
            chunk, size = [], 2
        size += len(encoded) + (1 if chunk else 0)
        chunk.append(encoded)
    if chunk:
        close()
    return bodies


# --------------------------------------------------------------------------- blobs


def _files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a folder stands for the files in it (not its subfolders), by name."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(child for child in path.iterdir() if child.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise BadInput(f"{path}: no such file or folder")
    return files


def _named(
    container: ContainerClient, policy: ModelPolicy, names: Sequence[str]
) -> list[NamedBlob]:
    from azure.core.exceptions import ResourceNotFoundError

    blobs = []
    for name in names:
        if not name.startswith(policy.data.prefix):
            raise BadInput(
                f"blob {name!r} is not under {policy.model}'s data prefix {policy.data.prefix!r}"
            )
        client = container.get_blob_client(name)
        try:
            properties = client.get_blob_properties()
        except ResourceNotFoundError:
            raise BadInput(f"no blob {name!r} in container {policy.data.container!r}") from None
        blobs.append(
            NamedBlob(policy.data.container, name, client.url, properties.etag, properties.size)
        )
    return blobs


def _listed(container: ContainerClient, policy: ModelPolicy, under: str) -> Iterator[NamedBlob]:
    prefix = under if under.startswith(policy.data.prefix) else policy.data.prefix + under
    for item in container.list_blobs(name_starts_with=prefix):
        if item.name.endswith("/"):
            continue
        url = container.get_blob_client(item.name).url
        yield NamedBlob(policy.data.container, item.name, url, item.etag, item.size)


# --------------------------------------------------------------------------- sending


def send_to_event_hubs(producer: EventHubProducerClient, bodies: Sequence[bytes]) -> int:
    """Every body as one event, in as few sends as the hub's batch size allows; the sends."""
    from azure.eventhub import EventData

    sends = 0
    batch = producer.create_batch()
    for body in bodies:
        event = EventData(body)
        try:
            batch.add(event)
        except ValueError:  # the batch is full: send it, start the next with this event
            producer.send_batch(batch)
            sends += 1
            batch = producer.create_batch()
            batch.add(event)
    if len(batch):
        producer.send_batch(batch)
        sends += 1
    return sends


def event_hub_producer_for(runtime: Runtime, hub: str) -> EventHubProducerClient:
    """A producer on `hub` of the app's Event Hubs namespace (its connection settings)."""
    from devhost.host.connections import MessagingConnection
    from devhost.host.messaging import event_hub_producer

    settings = runtime.settings
    connection = MessagingConnection(
        connection_string=settings.event_hub_connection_string,
        fully_qualified_namespace=settings.event_hub_namespace,
    )
    return event_hub_producer(connection, hub)


def send_events(
    runtime: Runtime,
    model: str,
    *,
    files: Sequence[Path | str] = (),
    blob_names: Sequence[str] = (),
    under: str | None = None,
    event_format: EventFormat = "event-grid",
    per_event: int | None = None,
    producer: EventHubProducerClient | None = None,
) -> SentEvents:
    """Upload `files` (as send-data does), add the blobs named or listed `under` a prefix, and
    send an event per at most `per_event` of them (default: the policy's cap) on the hub."""
    from adapters.storage_queue_bus import send_raw
    from devhost.host.connections import local_queue_name

    policy = policy_for(runtime, model)
    if event_format not in EVENT_FORMATS:
        raise BadInput(f"--format must be one of {', '.join(EVENT_FORMATS)}")
    cap = policy.retrain.max_items_per_event
    if per_event is not None and not 1 <= per_event <= cap:
        raise BadInput(f"--per-event must be from 1 to {cap} ({model}'s max_items_per_event)")
    paths = _files([Path(file) for file in files])
    if not (paths or blob_names or under is not None):
        raise BadInput("send-event needs files, --blob names or --under PREFIX")
    notes: list[str] = []
    blobs: list[NamedBlob] = []
    if paths:
        upload = send_data(runtime, model, paths)
        notes.extend(upload.notes)
        blobs.extend(
            NamedBlob(blob.container, blob.blob_name, blob.url, blob.etag or "", blob.size)
            for blob in upload.blobs
        )
        if event_format == "data-ready":
            notes.append(
                "these files were uploaded to the data container: an Event Grid subscription "
                "on it (devhost's too) also reports them, under another key than a data-ready "
                "event's, so they count twice; use --format event-grid for uploaded files"
            )
    container = data_blob_service(runtime).get_container_client(policy.data.container)
    blobs.extend(_named(container, policy, blob_names))
    if under is not None:
        listed = list(_listed(container, policy, under))
        if not listed:
            raise BadInput(f"no blob under {under!r} in container {policy.data.container!r}")
        blobs.extend(listed)
    if event_format == "event-grid":
        documents = [blob_created_document(blob) for blob in blobs]
    else:
        documents = [data_ready_document(model, blob) for blob in blobs]
    bodies = pack(documents, per_event or cap, MAX_EVENT_BYTES)
    settings = runtime.settings
    if producer is None and not settings.uses_event_hubs:
        queue_name = local_queue_name(settings.data_events_hub)
        queue = runtime.queue(queue_name)
        for body in bodies:
            send_raw(queue, body)
        route, sends = f"storage-queue:{queue_name}", len(bodies)
    else:
        if producer is not None:
            sends = send_to_event_hubs(producer, bodies)
        else:
            with event_hub_producer_for(runtime, settings.data_events_hub) as client:
                sends = send_to_event_hubs(client, bodies)
        route = "event-hubs"
    return SentEvents(
        model=model,
        format=event_format,
        hub=settings.data_events_hub,
        route=route,
        blobs=blobs,
        events=len(bodies),
        sends=sends,
        uploaded=len(paths),
        notes=tuple(notes),
    )
