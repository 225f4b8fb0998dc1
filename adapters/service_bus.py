"""Message bus on Azure Service Bus (azure-servicebus), identity-based in Azure.

`message_id` is the envelope id keyed by the app's signing key (deterministic, so the queue's
duplicate detection drops a re-sent effect; unguessable, so nobody can take a real message's
id first);
application properties carry type and model for filtering and for the dead-letter explorer;
with sessions enabled, `session_id` is the model, so one model's messages are handled in order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.servicebus import ServiceBusMessage

from orchestrator.messages import Envelope
from orchestrator.ports import ScheduledHandle

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusSender


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
    return ServiceBusMessage(
        envelope.model_dump_json(),
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

    def schedule(self, envelope: Envelope, at: datetime) -> ScheduledHandle:
        message = self._message(envelope, at)
        sequence_numbers = self._sender.schedule_messages(message, at)
        return ScheduledHandle(transport="service-bus", value=str(sequence_numbers[0]))

    def cancel(self, handle: ScheduledHandle) -> None:
        self._sender.cancel_scheduled_messages(int(handle.value))
