"""Message bus on Azure Storage queues (Azurite locally; a real account works the same).

Service Bus features mapped onto a storage queue:
- scheduling = visibility delay; beyond the queue's 7-day limit the message is re-hidden
  on receipt until its time (`deliver_at` in the wrapper);
- delivery count = the queue's dequeue count;
- dead letter = a `<queue>-poison` queue (the Functions host's convention) holding the body
  and the reason; `peek_dead_letters`, `take_dead_letter` and `send_raw` let the CLI list and
  replay them (devhost/cli/dead_letters.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from adapters.dead_letters import redact_token
from domain.data_location import redact_body, redact_text
from orchestrator.clock import Clock, utc_now
from orchestrator.messages import Envelope, InvalidMessage, parse_envelope
from orchestrator.ports import ScheduledHandle

log = logging.getLogger(__name__)

MAX_VISIBILITY = timedelta(days=7) - timedelta(minutes=1)


def ensure_queue(queue: QueueClient) -> QueueClient:
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    return queue


def encode_body(document: dict[str, Any]) -> str:
    # Base64, as the Functions host's queue bindings expect by default.
    return base64.b64encode(json.dumps(document).encode()).decode()


def decode_body(content: str | bytes) -> bytes:
    raw = content.encode() if isinstance(content, str) else content
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw  # a producer that did not base64-encode: take the text as it is


class StorageQueueBus:
    """The MessageBus port on one storage queue."""

    def __init__(
        self, queue: QueueClient, clock: Clock = utc_now, max_visibility: timedelta = MAX_VISIBILITY
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._max_visibility = max_visibility

    @property
    def queue_name(self) -> str:
        return self._queue.queue_name

    def send(self, envelope: Envelope) -> None:
        self._queue.send_message(encode_body(envelope.to_document()))

    def send_raw(self, body: bytes, message_id: str) -> None:
        """A body exactly as given (a replayed dead letter); a storage queue keeps no id."""
        send_raw(self._queue, body)

    def schedule(self, envelope: Envelope, at: datetime) -> ScheduledHandle:
        delay = at - self._clock()
        document: dict[str, Any] = envelope.to_document()
        if delay > self._max_visibility:
            document = _wrap(envelope.to_bytes(), deliver_at=at.isoformat())
        limit = int(self._max_visibility.total_seconds())
        seconds = max(0, min(int(delay.total_seconds() + 0.999), limit))
        sent = self._queue.send_message(encode_body(document), visibility_timeout=seconds)
        return ScheduledHandle(transport="storage-queue", value=f"{sent.id}|{sent.pop_receipt}")

    def cancel(self, handle: ScheduledHandle) -> None:
        message_id, pop_receipt = handle.value.split("|", 1)
        with contextlib.suppress(ResourceNotFoundError):  # already delivered or cancelled
            self._queue.delete_message(message_id, pop_receipt)


@dataclass
class PollResult:
    completed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    deferred: int = 0

    @property
    def received(self) -> int:
        return self.completed + self.retried + self.dead_lettered + self.deferred


@dataclass(frozen=True)
class Delivery:
    """One received message, as a trigger sees it: the body and how often it was delivered."""

    body: bytes
    delivery_count: int
    message_id: str
    inserted_on: datetime | None


RawHandler = Callable[[Delivery], None]
Handler = Callable[[Envelope, int], None]

# Our own wrapper around a body, for what a storage queue cannot carry in its metadata:
# a delivery time beyond the visibility limit, and the last error of a failed delivery.
_WRAPPER = "_retrain_wrapper"


def _wrap(body: bytes, **fields: Any) -> dict[str, Any]:
    return {_WRAPPER: 1, "body": body.decode("utf-8"), **fields}


class _Wrapper(BaseModel):
    """The wrapper, strictly: a malformed one is dead-lettered at once, never crash-looped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    marker: Literal[1] = Field(alias=_WRAPPER)
    body: str
    deliver_at: AwareDatetime | None = None
    last_error: str | None = None

    @field_validator("deliver_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # Strict mode takes only datetime objects; the wrapper carries ISO 8601 text.
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 date-time string")
        return datetime.fromisoformat(value)


@dataclass(frozen=True)
class ReadMessage:
    """A queue message as the consumer reads it: the body for the handler, and our wrapper's
    fields when the message carries one."""

    body: bytes
    wrapper: dict[str, Any] = field(default_factory=dict)
    deliver_at: datetime | None = None
    last_error: str | None = None


def read_message(content: str | bytes) -> ReadMessage:
    """The body of a queue message (base64 or plain text), unwrapped if it is our wrapper.
    A wrapper that cannot be read (a bad `deliver_at`, a body that is no text, an unknown
    field) raises InvalidMessage with the reason."""
    body = decode_body(content)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (or past its limits): a plain body
        return ReadMessage(body)
    if not isinstance(document, dict) or _WRAPPER not in document:
        return ReadMessage(body)
    try:
        wrapper = _Wrapper.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'wrapper'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidMessage(f"malformed delivery wrapper: {problems}"[:2000]) from exc
    return ReadMessage(
        wrapper.body.encode("utf-8", errors="surrogatepass"),
        document,
        wrapper.deliver_at,
        wrapper.last_error,
    )


def envelope_handler(handler: Handler) -> RawHandler:
    """Adapt an envelope handler: a body that is no valid envelope raises InvalidMessage."""

    def handle(delivery: Delivery) -> None:
        try:
            envelope = parse_envelope(delivery.body)
        except InvalidMessage:
            raise
        except (ValueError, RecursionError) as exc:
            # json.loads past its limits (nesting past the recursion limit, an integer past
            # the digit limit): as malformed as bad JSON, and a retry would fail the same way.
            raise InvalidMessage(f"body is not JSON: {type(exc).__name__}: {exc}"[:300]) from exc
        handler(envelope, delivery.delivery_count)

    return handle


class StorageQueueConsumer:
    """Receives from a storage queue, runs a handler, and settles each message.

    Success deletes the message. `InvalidMessage` (can never be handled) dead-letters it at
    once with the reason, and so does a message the consumer cannot even read (our wrapper
    malformed: `read_message`): once, as it came, and the poll goes on. Any other error leaves
    it for a retry after a backoff, with the error kept in the message; after
    `max_deliveries` it is dead-lettered with that error.
    """

    def __init__(
        self,
        queue: QueueClient,
        poison_queue: QueueClient,
        max_deliveries: int = 5,
        visibility_timeout: timedelta = timedelta(seconds=60),
        retry_base: timedelta = timedelta(seconds=2),
        clock: Clock = utc_now,
        max_visibility: timedelta = MAX_VISIBILITY,
    ) -> None:
        self._queue = queue
        self._poison = poison_queue
        self._max_deliveries = max_deliveries
        self._visibility = int(visibility_timeout.total_seconds())
        self._retry_base = retry_base.total_seconds()
        self._clock = clock
        self._max_visibility = max_visibility

    @property
    def queue_name(self) -> str:
        return self._queue.queue_name

    def poll(self, handler: Handler, max_messages: int = 32) -> PollResult:
        """Receive and handle envelopes (commands and events on our own queues)."""
        return self.poll_raw(envelope_handler(handler), max_messages)

    def poll_raw(self, handler: RawHandler, max_messages: int = 32) -> PollResult:
        """Receive and handle raw bodies (what a queue trigger binding would get)."""
        result = PollResult()
        messages = self._queue.receive_messages(
            messages_per_page=max_messages,
            visibility_timeout=self._visibility,
            max_messages=max_messages,
        )
        for message in messages:
            self._settle(message, handler, result)
        return result

    def _settle(self, message: QueueMessage, handler: RawHandler, result: PollResult) -> None:
        try:
            read = read_message(message.content)
        except InvalidMessage as exc:
            # Not even our wrapper could be read: no retry would read it either. Dead-lettered
            # once, as it came (nothing is lost), and the poll goes on with the others.
            self.dead_letter(message, decode_body(message.content), exc.reason)
            result.dead_lettered += 1
            return
        if read.deliver_at is not None and read.deliver_at > self._clock():
            self._defer(message, read.wrapper, read.deliver_at)
            result.deferred += 1
            return
        body = read.body
        deliveries = message.dequeue_count or 1
        if deliveries > self._max_deliveries:
            reason = f"delivered {deliveries - 1} times without success: {read.last_error}"
            self.dead_letter(message, body, reason)
            result.dead_lettered += 1
            return
        delivery = Delivery(body, deliveries, message.id, message.inserted_on)
        try:
            handler(delivery)
        except InvalidMessage as exc:
            self.dead_letter(message, body, exc.reason)
            result.dead_lettered += 1
            return
        except Exception as exc:  # any handler failure is retried, then dead-lettered
            log.warning("message %s failed (delivery %d): %s", message.id, deliveries, exc)
            self._retry(message, body, f"{type(exc).__name__}: {exc}", deliveries)
            result.retried += 1
            return
        self._queue.delete_message(message.id, message.pop_receipt)
        result.completed += 1

    def _defer(self, message: QueueMessage, document: dict[str, Any], at: datetime) -> None:
        remaining = (at - self._clock()).total_seconds()
        seconds = max(1, min(int(remaining + 0.999), int(self._max_visibility.total_seconds())))
        # Re-send rather than update: the dequeue count must not grow while we merely wait.
        self._queue.send_message(encode_body(document), visibility_timeout=seconds)
        self._queue.delete_message(message.id, message.pop_receipt)

    def _retry(self, message: QueueMessage, body: bytes, error: str, deliveries: int) -> None:
        backoff = int(min(self._retry_base * 2 ** (deliveries - 1), 300))
        try:
            content = encode_body(_wrap(body, last_error=error[:2000]))
        except UnicodeDecodeError:
            content = None  # keep the body as it is; the error is only logged
        self._queue.update_message(
            message.id, message.pop_receipt, content=content, visibility_timeout=backoff
        )

    def dead_letter(self, message: QueueMessage, body: bytes, reason: str) -> None:
        # No SAS token is kept (query strings and sig= values are removed) nor a person's bearer
        # token (the envelope's `auth`), as in adapters/dead_letters.py.
        reason = redact_text(reason)
        record = {
            "reason": reason,
            "queue": self._queue.queue_name,
            "message_id": message.id,
            "delivery_count": message.dequeue_count,
            "dead_lettered_at": datetime.now(UTC).isoformat(),
            "body": redact_body(redact_token(body.decode("utf-8", errors="replace"))),
        }
        log.error(
            "dead-lettering message %s from %s: %s", message.id, self._queue.queue_name, reason
        )
        self._poison.send_message(encode_body(record))
        self._queue.delete_message(message.id, message.pop_receipt)


def read_dead_letters(poison_queue: QueueClient, max_messages: int = 32) -> list[dict[str, Any]]:
    """Peek at dead-lettered records (for tests, the CLI and the status API)."""
    return [record for _, record in peek_dead_letters(poison_queue, max_messages)]


POISON_SUFFIX = "-poison"


def poison_record(content: str | bytes) -> dict[str, Any]:
    """A poison queue message as a record: ours (reason, queue, body, ...) or, from anyone
    else (the host's blob-trigger poison queue), the document as it is under `record`."""
    raw = decode_body(content)
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return {"reason": "not a dead-letter record", "body": raw.decode("utf-8", "replace")}
    return document if isinstance(document, dict) else {"reason": "", "record": document}


def peek_dead_letters(
    poison_queue: QueueClient, max_messages: int = 32
) -> list[tuple[str, dict[str, Any]]]:
    """(message id, record) of the first `max_messages` (at most 32: a queue's peek limit)."""
    peeked = poison_queue.peek_messages(max_messages=min(max_messages, 32))
    return [(message.id, poison_record(message.content)) for message in peeked]


def take_dead_letter(
    poison_queue: QueueClient, message_id: str, scan_visibility: int = 30
) -> tuple[QueueMessage, dict[str, Any]] | None:
    """Receive the poison message `message_id` (hidden from others for `scan_visibility`
    seconds, so one replay holds it); the others seen on the way are made visible again.
    None when it is not (or no longer) there."""
    passed: list[QueueMessage] = []
    found: tuple[QueueMessage, dict[str, Any]] | None = None
    try:
        while found is None:
            page = list(
                poison_queue.receive_messages(
                    messages_per_page=32, max_messages=32, visibility_timeout=scan_visibility
                )
            )
            if not page:
                break
            for message in page:
                if found is None and message.id == message_id:
                    found = (message, poison_record(message.content))
                else:
                    passed.append(message)
    finally:
        for message in passed:
            with contextlib.suppress(ResourceNotFoundError):
                poison_queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    return found


def send_raw(queue: QueueClient, body: bytes) -> None:
    """Send `body` exactly as given (base64, as every sender here writes): what a replay of a
    dead letter sends, so an internal message keeps the bytes its MAC covers."""
    queue.send_message(base64.b64encode(body).decode())
