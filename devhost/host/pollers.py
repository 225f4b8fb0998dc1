"""Non-HTTP triggers. Each poller does one pass with `poll_once()` and returns how many
invocations it made; the host runs them in threads or one pass at a time (tests, demo)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import azure.functions as func
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.functions import blob as functions_blob
from azure.functions import timer as functions_timer
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from adapters.storage_queue_bus import Delivery, StorageQueueConsumer
from devhost.host.connections import MessagingConnection
from devhost.host.invoke import Invoker
from devhost.host.messaging import (
    decode_queue_content,
    event_from_body,
    event_from_event_data,
    event_hub_consumer,
    service_bus_client,
    service_bus_message_from_received,
)
from devhost.host.schedule import parse_schedule
from devhost.host.settings import DevHostError, resolve_placeholders
from devhost.host.storage import ensure_container

if TYPE_CHECKING:
    from azure.eventhub import EventData, PartitionContext

log = logging.getLogger("devhost")

HOSTS_CONTAINER = "azure-webjobs-hosts"
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"
EVENT_GRID_DEAD_LETTERS = "eventgrid-dead-letters"  # as infra/storage.bicep names it
# How long a received message stays hidden while the function runs (host.json functionTimeout).
PROCESSING_VISIBILITY = timedelta(minutes=5)
STORAGE_QUEUE_PAGE = 32


class Poller(Protocol):
    name: str

    def poll_once(self) -> int: ...

    def close(self) -> None: ...


# --- blob trigger ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobPath:
    """A blob trigger `path`: container, the listing prefix and a matcher for the rest."""

    container: str
    prefix: str
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, path: str) -> BlobPath:
        container, _, rest = path.strip("/").partition("/")
        rest = rest or "{name}"
        prefix = rest.split("{", 1)[0]
        regex = ""
        for literal, expression in re.findall(r"([^{]*)(?:\{([^}]*)\})?", rest):
            regex += re.escape(literal)
            if expression:
                regex += f"(?P<{expression}>.+?)" if expression.isidentifier() else ".+?"
        return cls(container, prefix, re.compile(f"^{regex}$"))

    def match(self, blob_name: str) -> dict[str, str] | None:
        found = self.pattern.match(blob_name)
        return None if found is None else {k: v for k, v in found.groupdict().items() if v}


def _plain_etag(etag: str) -> str:
    return etag.strip('"')


class BlobTriggerPoller:
    """Fires once per blob name + ETag; receipts in `azure-webjobs-hosts` survive restarts."""

    def __init__(
        self,
        invoker: Invoker,
        blobs: BlobServiceClient,
        host_blobs: BlobServiceClient,
        poison_queue: QueueClient,
        poison_threshold: int,
        path: BlobPath | None = None,
    ) -> None:
        self.name = invoker.spec.name
        self._invoker = invoker
        self._path = path or BlobPath.parse(invoker.spec.trigger["path"])
        self._container = blobs.get_container_client(self._path.container)
        self._hosts_service = host_blobs
        self._hosts = ensure_container(host_blobs, HOSTS_CONTAINER)
        self._poison = poison_queue
        self._threshold = poison_threshold
        self._done: set[tuple[str, str]] = set()
        self._failures: dict[tuple[str, str], int] = {}

    @property
    def _receipt_prefix(self) -> str:
        return f"blobreceipts/{self.name}/{self._path.container}/"

    def receipt_name(self, blob_name: str, etag: str) -> str:
        return f"{self._receipt_prefix}{blob_name}/{_plain_etag(etag)}"

    def poll_once(self) -> int:
        candidates = [blob for blob in self._list_blobs() if self._is_new(blob)]
        if candidates:
            self._done |= self._receipts()
        invocations = 0
        for blob in candidates:
            if (blob.name, _plain_etag(blob.etag)) not in self._done:
                self._process(blob)
                invocations += 1
        return invocations

    def _list_blobs(self) -> list[BlobProperties]:
        try:
            blobs = self._container.list_blobs(
                name_starts_with=self._path.prefix or None, include=["metadata"]
            )
            return [blob for blob in blobs if self._path.match(blob.name) is not None]
        except ResourceNotFoundError:
            return []  # the container does not exist yet

    def _is_new(self, blob: BlobProperties) -> bool:
        return (blob.name, _plain_etag(blob.etag)) not in self._done

    def _receipts(self) -> set[tuple[str, str]]:
        found = set()
        for receipt in self._hosts.list_blobs(name_starts_with=self._receipt_prefix):
            blob_name, _, etag = receipt.name[len(self._receipt_prefix) :].rpartition("/")
            found.add((blob_name, etag))
        return found

    def _process(self, blob: BlobProperties) -> None:
        key = (blob.name, _plain_etag(blob.etag))
        client = self._container.get_blob_client(blob.name)
        try:
            downloader = client.download_blob(etag=blob.etag, match_condition=_if_match())
            data = downloader.readall()
        except ResourceNotFoundError:
            self._done.add(key)  # deleted meanwhile: nothing to do
            return
        except ResourceModifiedError:
            return  # changed since it was listed: the next pass sees the new ETag
        stream = functions_blob.InputStream(
            name=f"{self._path.container}/{blob.name}",
            uri=client.url,
            length=len(data),
            data=data,
            blob_properties={"ETag": blob.etag, "Length": len(data)},
            metadata=dict(blob.metadata or {}),
        )
        binding_data = {"name": blob.name, **(self._path.match(blob.name) or {})}
        try:
            self._invoker.invoke(stream, binding_data)
        except Exception as exc:
            self._record_failure(key, blob, exc)
            return
        self._complete(key)

    def _complete(self, key: tuple[str, str]) -> None:
        self._hosts.upload_blob(self.receipt_name(*key), b"", overwrite=True)
        self._done.add(key)
        self._failures.pop(key, None)

    def _record_failure(self, key: tuple[str, str], blob: BlobProperties, exc: Exception) -> None:
        attempts = self._failures.get(key, 0) + 1
        self._failures[key] = attempts
        if attempts < self._threshold:
            return
        log.error(
            "%s: blob %s/%s failed %d times; moved to %s",
            self.name, self._path.container, blob.name, attempts, BLOB_POISON_QUEUE,
        )  # fmt: skip
        record = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{self.name}",
            "BlobType": "BlockBlob",
            "ContainerName": self._path.container,
            "BlobName": blob.name,
            "ETag": blob.etag,
            "Error": f"{type(exc).__name__}: {exc}"[:2000],
        }
        self._poison.send_message(base64.b64encode(json.dumps(record).encode()).decode())
        self._complete(key)

    def close(self) -> None:
        return None


class EventGridBlobPoller(BlobTriggerPoller):
    """An Event Grid subscription to `Microsoft.Storage.BlobCreated` on one container (devhost
    setting DEVHOST_EVENT_GRID_SUBSCRIPTIONS), emulated by listing it: each new blob name + ETag
    is one event in the Event Grid schema, built from the listing (url, eTag, contentLength),
    the blob never read. A delivery that keeps failing is dead-lettered to the container
    `eventgrid-dead-letters`, as a subscription's storage dead-letter destination."""

    def _process(self, blob: BlobProperties) -> None:
        key = (blob.name, _plain_etag(blob.etag))
        event = _event_for(self._container, blob)
        try:
            self._invoker.invoke(event, {})
        except Exception as exc:
            self._record_failure(key, blob, exc)
            return
        self._complete(key)

    @property
    def _receipt_prefix(self) -> str:
        return f"eventgridreceipts/{self.name}/{self._path.container}/"

    def _record_failure(self, key: tuple[str, str], blob: BlobProperties, exc: Exception) -> None:
        attempts = self._failures.get(key, 0) + 1
        self._failures[key] = attempts
        if attempts < self._threshold:
            return
        event = _event_for(self._container, blob)
        log.error("%s: event %s failed %d times; dead-lettered to %s",
                  self.name, event.id, attempts, EVENT_GRID_DEAD_LETTERS)  # fmt: skip
        record = {
            "id": event.id,
            "eventType": event.event_type,
            "subject": event.subject,
            "data": event.get_json(),
            "deadLetterReason": "MaxDeliveryAttemptsExceeded",
            "deliveryAttempts": attempts,
            "lastDeliveryOutcome": f"{type(exc).__name__}: {exc}"[:2000],
        }
        container = ensure_container(self._hosts_service, EVENT_GRID_DEAD_LETTERS)
        container.upload_blob(f"{self.name}/{event.id}.json", json.dumps(record), overwrite=True)
        self._complete(key)


EVENT_GRID_SUBSCRIPTIONS = "DEVHOST_EVENT_GRID_SUBSCRIPTIONS"


def event_grid_subscription(function: str, environ: Mapping[str, str]) -> tuple[str, BlobPath]:
    """Which container's BlobCreated events go to `function`: the devhost setting
    `DEVHOST_EVENT_GRID_SUBSCRIPTIONS`, `<function>=<connection>:<container>[/<prefix>]` (comma
    separated; %SETTING% placeholders resolved), as an Event Grid subscription would say."""
    raw = environ.get(EVENT_GRID_SUBSCRIPTIONS, "")
    example = f"{EVENT_GRID_SUBSCRIPTIONS}={function}=DataStorage:%DATA_CONTAINER%"
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        name, equals, source = entry.partition("=")
        connection, colon, path = source.partition(":")
        if not (equals and colon and name.strip() and connection.strip() and path.strip("/ ")):
            raise DevHostError(
                f"{EVENT_GRID_SUBSCRIPTIONS}: {entry!r} is not "
                "<function>=<connection>:<container>[/<prefix>]"
            )
        if name.strip() == function:
            where = f"{EVENT_GRID_SUBSCRIPTIONS} ({function})"
            path = resolve_placeholders(path.strip(), environ, where).strip("/")
            container, _, prefix = path.partition("/")
            return connection.strip(), BlobPath.parse(f"{container}/{prefix}{{name}}")
    raise DevHostError(
        f"function {function!r} has an Event Grid trigger and no subscription: add "
        f"{example!r} to local.settings.json Values (which container's BlobCreated events "
        "devhost delivers to it)"
    )


def blob_created_event(
    container_url: str,
    blob_name: str,
    etag: str,
    size: int | None = None,
    *,
    account: str = "devstoreaccount1",
    content_type: str | None = None,
    last_modified: datetime | None = None,
) -> func.EventGridEvent:
    """The event Event Grid sends for a blob written with Put Blob (its documented schema)."""
    from urllib.parse import quote

    container = container_url.rstrip("/").rsplit("/", 1)[-1]
    data = {
        "api": "PutBlob",
        "eTag": _plain_etag(etag),  # as Event Grid writes it: no quotes
        "contentType": content_type,
        "contentLength": size,
        "blobType": "BlockBlob",
        "url": f"{container_url.rstrip('/')}/{quote(blob_name)}",
        "sequencer": _plain_etag(etag),
    }
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{data['url']}@{_plain_etag(etag)}"))
    return func.EventGridEvent(
        id=event_id,
        data=data,
        topic="/subscriptions/devhost/resourceGroups/devhost/providers/Microsoft.Storage/"
        f"storageAccounts/{account}",
        subject=f"/blobServices/default/containers/{container}/blobs/{blob_name}",
        event_type="Microsoft.Storage.BlobCreated",
        event_time=last_modified or datetime.now(UTC),
        data_version="",
    )


def _event_for(container: ContainerClient, blob: BlobProperties) -> func.EventGridEvent:
    settings = blob.content_settings
    return blob_created_event(
        container.url,
        blob.name,
        blob.etag,
        blob.size,
        account=str(container.account_name or "devstoreaccount1"),
        content_type=settings.content_type if settings else None,
        last_modified=blob.last_modified,
    )


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


# --- storage-queue triggers (queueTrigger, and Service Bus locally) ---------------------------


class QueueTriggerPoller:
    """A storage queue consumed with StorageQueueConsumer; `convert` builds the payload."""

    def __init__(
        self,
        invoker: Invoker,
        consumer: StorageQueueConsumer,
        convert: Callable[[Delivery], Any],
    ) -> None:
        self.name = invoker.spec.name
        self._invoker = invoker
        self._consumer = consumer
        self._convert = convert

    def poll_once(self) -> int:
        invocations = 0

        def handle(delivery: Delivery) -> None:
            nonlocal invocations
            invocations += 1
            self._invoker.invoke(self._convert(delivery))

        self._consumer.poll_raw(handle)
        return invocations

    def close(self) -> None:
        return None


# --- Event Hubs locally: a storage queue read in batches -------------------------------------


class LocalEventHubPoller:
    """An event hub stood in for by a storage queue: MANY -> a list per batch, ONE -> each.

    As with the real trigger, events are checkpointed (deleted) even when the function
    fails once its retry policy is spent: Event Hubs has no redelivery, the failure is only
    logged. Under an unlimited policy (`max_retry_count` -1) the host never moves the
    checkpoint past a failed batch; here the batch stays in the queue and comes back after
    the processing visibility (5 minutes).
    """

    def __init__(self, invoker: Invoker, queue: QueueClient, max_batch_size: int) -> None:
        self.name = invoker.spec.name
        self._invoker = invoker
        self._queue = queue
        self._many = str(invoker.spec.trigger.get("cardinality", "MANY")).upper() == "MANY"
        self._max_batch = max_batch_size if self._many else 1
        self._sequence = 0
        retry = invoker.spec.retry
        self._unlimited = retry is not None and retry.max_retry_count < 0

    def poll_once(self) -> int:
        invocations = 0
        while True:
            messages = self._receive_batch()
            if not messages:
                return invocations
            events = [self._event(message) for message in messages]
            payloads: Iterable[Any] = [events] if self._many else events
            failed = False
            for payload in payloads:
                invocations += 1
                try:
                    self._invoker.invoke_with_retry_policy(payload)
                except Exception:
                    failed = True
                    then = "kept for redelivery" if self._unlimited else "not retried"
                    log.warning("%s: batch of %d event(s) failed; %s", self.name, len(events), then)
            if failed and self._unlimited:
                return invocations  # the checkpoint stays: the batch is delivered again
            for message in messages:
                self._queue.delete_message(message.id, message.pop_receipt)

    def _receive_batch(self) -> list[Any]:
        batch: list[Any] = []
        while len(batch) < self._max_batch:
            wanted = min(STORAGE_QUEUE_PAGE, self._max_batch - len(batch))
            page = list(
                self._queue.receive_messages(
                    messages_per_page=wanted,
                    max_messages=wanted,
                    visibility_timeout=int(PROCESSING_VISIBILITY.total_seconds()),
                )
            )
            batch.extend(page)
            if len(page) < wanted:
                break
        return batch

    def _event(self, message: Any) -> func.EventHubEvent:
        self._sequence += 1
        body = decode_queue_content(message.content)
        return event_from_body(body, message.inserted_on, self._sequence)

    def close(self) -> None:
        return None


# --- real Service Bus --------------------------------------------------------------------------


class ServiceBusReceiverPoller:
    """A real Service Bus queue or subscription: complete on success, abandon on failure."""

    def __init__(
        self, invoker: Invoker, connection: MessagingConnection, max_wait: float, batch: int = 16
    ) -> None:
        self.name = invoker.spec.name
        self._invoker = invoker
        trigger = invoker.spec.trigger
        self._queue = trigger.get("queueName")
        self._topic = trigger.get("topicName")
        self._subscription = trigger.get("subscriptionName")
        self._sessions = bool(trigger.get("isSessionsEnabled"))
        self._max_wait = max_wait
        self._batch = batch
        self._client = service_bus_client(connection)
        # A batch is locked when received and handled one message at a time: without renewal
        # (the host renews for maxAutoLockRenewalDuration, 5 min) the locks of the last ones can
        # expire first (LockDuration is 1 min by default), so they would run twice.
        from azure.servicebus import AutoLockRenewer

        self._renewer = AutoLockRenewer(
            max_lock_renewal_duration=PROCESSING_VISIBILITY.total_seconds()
        )
        self._receiver: Any = None if self._sessions else self._open_receiver()

    def _open_receiver(self, **options: Any) -> Any:
        options["auto_lock_renewer"] = self._renewer
        if self._queue:
            return self._client.get_queue_receiver(self._queue, **options)
        return self._client.get_subscription_receiver(self._topic, self._subscription, **options)

    def poll_once(self) -> int:
        if not self._sessions:
            return self._receive(self._receiver)
        from azure.servicebus import NEXT_AVAILABLE_SESSION
        from azure.servicebus.exceptions import OperationTimeoutError

        try:
            receiver = self._open_receiver(
                session_id=NEXT_AVAILABLE_SESSION, max_wait_time=self._max_wait
            )
            with receiver:
                return self._receive(receiver)
        except OperationTimeoutError:
            return 0  # no session has messages

    def _receive(self, receiver: Any) -> int:
        messages = receiver.receive_messages(
            max_message_count=self._batch, max_wait_time=self._max_wait
        )
        for message in messages:
            try:
                self._invoker.invoke(service_bus_message_from_received(message))
            except Exception:
                receiver.abandon_message(message)
            else:
                receiver.complete_message(message)
        return len(messages)

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
        self._renewer.close()
        self._client.close()


# --- real Event Hubs ---------------------------------------------------------------------------


class EventHubReceiverPoller:
    """A real event hub, read by EventHubConsumerClient.receive_batch in its own thread.

    No checkpoint store is configured: each start reads from the end (host.json
    initialOffsetOptions fromEnd), so events sent while devhost was down are not seen.
    """

    def __init__(
        self, invoker: Invoker, connection: MessagingConnection, max_batch_size: int
    ) -> None:
        self.name = invoker.spec.name
        self._invoker = invoker
        trigger = invoker.spec.trigger
        self._many = str(trigger.get("cardinality", "MANY")).upper() == "MANY"
        self._max_batch = max_batch_size
        retry = invoker.spec.retry
        self._unlimited = retry is not None and retry.max_retry_count < 0
        self._client = event_hub_consumer(
            connection, trigger["eventHubName"], trigger.get("consumerGroup") or "$Default"
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"devhost-eventhub-{self.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self._client.receive_batch(
                on_event_batch=self._on_batch,
                max_batch_size=self._max_batch,
                max_wait_time=5,
                starting_position="@latest",
            )
        except Exception:
            log.exception("%s: the Event Hubs receiver stopped", self.name)

    def _on_batch(self, partition: PartitionContext, events: list[EventData]) -> None:
        if not events:
            return  # max_wait_time passed with nothing new
        # Nothing may escape this callback: the SDK would drop the partition and read it again
        # from the last checkpoint, so a batch that cannot be converted would fail forever and
        # hold back every later event. It is logged and checkpointed, like a failed invocation.
        try:
            converted = [event_from_event_data(event) for event in events]
        except Exception:
            log.exception("%s: %d event(s) could not be read; skipped", self.name, len(events))
        else:
            for payload in [converted] if self._many else converted:
                try:
                    if self._unlimited:  # as the host: retried in memory, never skipped
                        self._invoker.invoke_until_done(payload)
                    else:
                        self._invoker.invoke_with_retry_policy(payload)
                except Exception:
                    if self._unlimited:
                        return  # stopped while retrying: the checkpoint stays before it
                    log.warning("%s: events failed; not retried (as the host does)", self.name)
        partition.update_checkpoint(events[-1])

    def poll_once(self) -> int:
        return 0  # events arrive on the receiver's own thread

    def close(self) -> None:
        self._client.close()
        if self._thread is not None:
            self._thread.join(timeout=10)


# --- timer -------------------------------------------------------------------------------------

PAST_DUE_TOLERANCE = timedelta(seconds=5)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class TimerPoller:
    """Fires when the schedule's next time has come (once, however many were missed)."""

    def __init__(self, invoker: Invoker, clock: Clock = utc_now) -> None:
        self.name = invoker.spec.name
        self._invoker = invoker
        self._clock = clock
        self._schedule = parse_schedule(invoker.spec.trigger["schedule"])
        self._startup_pending = bool(invoker.spec.trigger.get("runOnStartup"))
        self._last: datetime | None = None
        self.next_fire = self._schedule.next_after(clock())

    def poll_once(self) -> int:
        now = self._clock()
        invocations = 0
        if self._startup_pending:
            self._startup_pending = False
            self._fire(now, past_due=False)
            invocations += 1
        if now >= self.next_fire:
            self._fire(now, past_due=now - self.next_fire > PAST_DUE_TOLERANCE)
            self.next_fire = self._schedule.next_after(now)
            invocations += 1
        return invocations

    def _fire(self, now: datetime, past_due: bool) -> None:
        status = {
            "Last": (self._last or now).isoformat(),
            "Next": self._schedule.next_after(now).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        request = functions_timer.TimerRequest(
            past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True}
        )
        self._last = now
        with contextlib.suppress(Exception):  # logged by the invoker
            self._invoker.invoke_with_retry_policy(request)

    def close(self) -> None:
        return None
