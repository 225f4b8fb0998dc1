"""Message bus on Azure Service Bus (azure-servicebus), identity-based in Azure.

`message_id` is the envelope id keyed by the app's signing key (deterministic, so the queue's
duplicate detection drops a re-sent effect; unguessable, so nobody can take a real message's
id first);
application properties carry type and model for filtering and for the dead-letter explorer;
with sessions enabled, `session_id` is the model, so one model's messages are handled in order.

`ServiceBusDeadLetters` lists and replays the queues' own dead-letter sub-queues (for
`python -m devhost.cli dead-letters`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.servicebus import ServiceBusMessage

from orchestrator.messages import Envelope
from orchestrator.ports import ScheduledHandle

if TYPE_CHECKING:
    from azure.servicebus import (
        ServiceBusClient,
        ServiceBusReceivedMessage,
        ServiceBusReceiver,
        ServiceBusSender,
    )


def build_message(
    envelope: Envelope,
    *,
    sessions: bool = False,
    at: datetime | None = None,
    message_id: str | None = None,
) -> ServiceBusMessage:
    properties: dict[str | bytes, Any] = {"type": envelope.type, "model": envelope.model}
    if envelope.promotion_id:
        properties["promotion_id"] = envelope.promotion_id
    if envelope.traceparent:
        # Where the Service Bus SDK's own tracing puts it: the Functions host parents the
        # invocation on it, so the receiving side joins the same trace. Under the SDK's keys
        # (bytes): with its tracing on (Azure Monitor turns it on) it only sets them when
        # absent, whereas under str keys it would add its own next to them, and the wire
        # would carry each key twice (both encode as the same AMQP string).
        properties[b"Diagnostic-Id"] = envelope.traceparent
        properties[b"traceparent"] = envelope.traceparent
    return ServiceBusMessage(
        envelope.to_json(),
        message_id=message_id or envelope.message_id,
        content_type="application/json",
        subject=envelope.type,
        application_properties=properties,
        session_id=envelope.model if sessions else None,
        scheduled_enqueue_time_utc=at,
    )


class ServiceBusBus:
    """The MessageBus port on one Service Bus queue."""

    def __init__(
        self,
        sender: ServiceBusSender,
        *,
        sessions: bool = False,
        transport_id: Callable[[str], str] | None = None,
    ) -> None:
        self._sender = sender
        self._sessions = sessions
        self._transport_id = transport_id or (lambda message_id: message_id)

    @classmethod
    def connect(
        cls,
        queue: str,
        *,
        namespace: str | None = None,
        connection_string: str | None = None,
        sessions: bool = False,
        transport_id: Callable[[str], str] | None = None,
    ) -> ServiceBusBus:
        """Identity-based (`namespace` + DefaultAzureCredential), or a connection string locally."""
        from azure.servicebus import ServiceBusClient

        if connection_string:
            client = ServiceBusClient.from_connection_string(connection_string)
        elif namespace:
            from adapters.azure_credential import azure_credential

            client = ServiceBusClient(namespace, azure_credential())
        else:
            raise ValueError("Service Bus needs a namespace or a connection string")
        return cls(client.get_queue_sender(queue), sessions=sessions, transport_id=transport_id)

    def _message(self, envelope: Envelope, at: datetime | None = None) -> ServiceBusMessage:
        return build_message(
            envelope,
            sessions=self._sessions,
            at=at,
            message_id=self._transport_id(envelope.message_id),
        )

    def send(self, envelope: Envelope) -> None:
        self._sender.send_messages(self._message(envelope))

    def send_raw(self, body: bytes, message_id: str) -> None:
        """A body exactly as given (a replayed dead letter: an internal message keeps the bytes
        its MAC covers), under `message_id` so a replay sent twice is dropped as a duplicate."""
        self._sender.send_messages(
            ServiceBusMessage(
                body, message_id=message_id[:MAX_MESSAGE_ID], content_type="application/json"
            )
        )

    def schedule(self, envelope: Envelope, at: datetime) -> ScheduledHandle:
        message = self._message(envelope, at)
        sequence_numbers = self._sender.schedule_messages(message, at)
        return ScheduledHandle(transport="service-bus", value=str(sequence_numbers[0]))

    def cancel(self, handle: ScheduledHandle) -> None:
        self._sender.cancel_scheduled_messages(int(handle.value))


# --------------------------------------------------------------------------- dead-letter queue

# What Service Bus itself puts in a dead-lettered message's application properties: not
# copied into a replay (the replay is a fresh delivery, not a dead letter).
DEAD_LETTER_PROPERTIES = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})
MAX_MESSAGE_ID = 128


def message_body(message: ServiceBusReceivedMessage) -> bytes:
    """The bytes a sender put in the message (a data body; other AMQP bodies as text)."""
    from azure.servicebus.amqp import AmqpMessageBodyType

    if message.body_type == AmqpMessageBodyType.DATA:
        body = message.body
        return body if isinstance(body, bytes) else b"".join(body)
    return str(message).encode()


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


_TRACE_KEYS = frozenset({"Diagnostic-Id", "traceparent"})


def _property_key(key: Any) -> Any:
    """The trace keys stay the SDK's own (bytes), as `to_service_bus_message` sends them: under
    str keys the SDK's tracing would add its own beside them (each key twice on the wire)."""
    return key.encode() if key in _TRACE_KEYS else key


def replay_message(message: ServiceBusReceivedMessage) -> ServiceBusMessage:
    """A copy of a dead-lettered message to send back to its queue: the same body (an internal
    message keeps the bytes its MAC covers), properties, subject and session, without the
    dead-letter bookkeeping. Its id is derived from the dead letter's sequence number, so a
    replay sent twice is one message to the queue's duplicate detection."""
    properties: dict[str | bytes, Any] = {
        _property_key(_text(key)): _text(value)
        for key, value in (message.application_properties or {}).items()
        if _text(key) not in DEAD_LETTER_PROPERTIES
    }
    properties["replayed_from_sequence_number"] = message.sequence_number
    return ServiceBusMessage(
        message_body(message),
        message_id=f"replay-{message.sequence_number}-{message.message_id}"[:MAX_MESSAGE_ID],
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        subject=message.subject,
        application_properties=properties,
        session_id=message.session_id,
    )


class ServiceBusDeadLetters:
    """The dead-letter sub-queue of the app's Service Bus queues: what Service Bus itself
    dead-lettered (MaxDeliveryCountExceeded, an expired TTL) and, with settlement by the
    trigger, what the app dead-lettered. Listed by peeking; replayed by receiving it, sending
    a copy to its queue, then completing it (a failure before the complete leaves it there)."""

    def __init__(self, client: ServiceBusClient, max_wait_seconds: float = 5.0) -> None:
        self._client = client
        self._max_wait = max_wait_seconds

    @classmethod
    def connect(
        cls, *, namespace: str | None = None, connection_string: str | None = None
    ) -> ServiceBusDeadLetters:
        from azure.servicebus import ServiceBusClient

        if connection_string:
            return cls(ServiceBusClient.from_connection_string(connection_string))
        if not namespace:
            raise ValueError("Service Bus needs a namespace or a connection string")
        from adapters.azure_credential import azure_credential

        return cls(ServiceBusClient(namespace, azure_credential()))

    def _dead_letter_receiver(self, queue: str) -> ServiceBusReceiver:
        from azure.servicebus import ServiceBusReceiveMode, ServiceBusSubQueue

        return self._client.get_queue_receiver(
            queue,
            sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
            max_wait_time=self._max_wait,
        )

    def peek(self, queue: str, max_count: int = 100) -> list[ServiceBusReceivedMessage]:
        with self._dead_letter_receiver(queue) as receiver:
            return list(receiver.peek_messages(max_message_count=max_count))

    def replay(
        self,
        queue: str,
        sequence_number: int,
        refuse: Callable[[bytes], None] | None = None,
    ) -> ServiceBusMessage | None:
        """Send the dead letter `sequence_number` back to `queue` and complete it; the copy
        sent, or None when there is no such dead letter (any more). `refuse(body)` may raise
        to refuse it (it is then left in the dead-letter queue)."""
        with self._dead_letter_receiver(queue) as receiver:
            passed: list[ServiceBusReceivedMessage] = []
            try:
                while True:
                    page = receiver.receive_messages(
                        max_message_count=32, max_wait_time=self._max_wait
                    )
                    if not page:
                        return None
                    for message in page:
                        if message.sequence_number == sequence_number:
                            if refuse is not None:
                                try:
                                    refuse(message_body(message))
                                except Exception:
                                    passed.append(message)  # abandoned: stays dead-lettered
                                    raise
                            copy = replay_message(message)
                            with self._client.get_queue_sender(queue) as sender:
                                sender.send_messages(copy)
                            receiver.complete_message(message)
                            return copy
                        passed.append(message)
            finally:
                for message in passed:  # the others go back to the dead-letter queue at once
                    receiver.abandon_message(message)
