"""Binding payloads (func.ServiceBusMessage, func.EventHubEvent, func.QueueMessage) and the
real Service Bus / Event Hubs clients used when the connection settings name a namespace."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.functions as func
from azure.functions import servicebus as functions_servicebus

from adapters.azure_credential import azure_credential
from adapters.storage_queue_bus import Delivery
from devhost.host.connections import MessagingConnection

if TYPE_CHECKING:
    from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
    from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage


def decode_queue_content(content: str | bytes) -> bytes:
    """A storage queue message body: base64 (the Functions default) or plain text."""
    raw = content.encode() if isinstance(content, str) else content
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw


def _looks_like_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def service_bus_message_from_delivery(delivery: Delivery) -> func.ServiceBusMessage:
    """A local storage-queue delivery as the Service Bus trigger would pass it."""
    return functions_servicebus.ServiceBusMessage(
        body=delivery.body,
        message_id=delivery.message_id,
        delivery_count=delivery.delivery_count,
        content_type="application/json" if _looks_like_json(delivery.body) else None,
        enqueued_time_utc=delivery.inserted_on,
        application_properties={},
        user_properties={},
    )


def queue_message_from_delivery(delivery: Delivery) -> func.QueueMessage:
    from azure.functions import queue as functions_queue

    return functions_queue.QueueMessage(
        id=delivery.message_id,
        body=delivery.body,
        dequeue_count=delivery.delivery_count,
        insertion_time=delivery.inserted_on,
    )


def event_from_body(
    body: bytes, enqueued_time: datetime | None, sequence_number: int
) -> func.EventHubEvent:
    return func.EventHubEvent(
        body=body,
        enqueued_time=enqueued_time or datetime.now(UTC),
        sequence_number=sequence_number,
        offset=str(sequence_number),
    )


# --- real Service Bus ------------------------------------------------------------------------


def service_bus_client(connection: MessagingConnection) -> ServiceBusClient:
    from azure.servicebus import ServiceBusClient

    if connection.connection_string:
        return ServiceBusClient.from_connection_string(connection.connection_string)
    assert connection.fully_qualified_namespace is not None
    return ServiceBusClient(connection.fully_qualified_namespace, azure_credential())


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _received_body(message: ServiceBusReceivedMessage) -> bytes:
    from azure.servicebus.amqp import AmqpMessageBodyType

    if message.body_type == AmqpMessageBodyType.DATA:
        return _join(message.body)
    if message.body_type == AmqpMessageBodyType.VALUE:
        value = message.body
        return value if isinstance(value, bytes) else json.dumps(_text(value)).encode()
    return str(message).encode()


def service_bus_message_from_received(message: ServiceBusReceivedMessage) -> func.ServiceBusMessage:
    """A message received from a real Service Bus, as the trigger binding passes it."""
    raw_properties = message.application_properties or {}
    properties = {str(_text(key)): _text(value) for key, value in raw_properties.items()}
    return functions_servicebus.ServiceBusMessage(
        body=_received_body(message),
        message_id=str(message.message_id),
        application_properties=properties,
        user_properties=dict(properties),
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        dead_letter_error_description=message.dead_letter_error_description,
        dead_letter_reason=message.dead_letter_reason,
        dead_letter_source=message.dead_letter_source,
        delivery_count=message.delivery_count,
        enqueued_sequence_number=message.enqueued_sequence_number,
        enqueued_time_utc=message.enqueued_time_utc,
        expires_at_utc=message.expires_at_utc,
        label=message.subject,
        locked_until=message.locked_until_utc,
        lock_token=str(message.lock_token) if message.lock_token else None,
        partition_key=message.partition_key,
        reply_to=message.reply_to,
        reply_to_session_id=message.reply_to_session_id,
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time_utc,
        sequence_number=message.sequence_number,
        session_id=message.session_id,
        subject=message.subject,
        time_to_live=message.time_to_live,
        to=message.to,
    )


# --- real Event Hubs -------------------------------------------------------------------------


def event_hub_consumer(
    connection: MessagingConnection, hub: str, consumer_group: str
) -> EventHubConsumerClient:
    from azure.eventhub import EventHubConsumerClient

    if connection.connection_string:
        return EventHubConsumerClient.from_connection_string(
            connection.connection_string, consumer_group=consumer_group, eventhub_name=hub
        )
    assert connection.fully_qualified_namespace is not None
    return EventHubConsumerClient(
        connection.fully_qualified_namespace, hub, consumer_group, azure_credential()
    )


def event_hub_producer(connection: MessagingConnection, hub: str) -> EventHubProducerClient:
    from azure.eventhub import EventHubProducerClient

    if connection.connection_string:
        return EventHubProducerClient.from_connection_string(
            connection.connection_string, eventhub_name=hub
        )
    assert connection.fully_qualified_namespace is not None
    return EventHubProducerClient(connection.fully_qualified_namespace, hub, azure_credential())


def event_from_event_data(event: EventData) -> func.EventHubEvent:
    from azure.eventhub.amqp import AmqpMessageBodyType

    if event.body_type == AmqpMessageBodyType.DATA:
        body = _join(event.body)
    elif isinstance(event.body, bytes):  # a binary AMQP value: as sent, not decoded as UTF-8
        body = event.body
    else:
        body = event.body_as_str(encoding="utf-8").encode()
    return func.EventHubEvent(
        body=body,
        enqueued_time=event.enqueued_time,
        partition_key=_text(event.partition_key),
        sequence_number=event.sequence_number,
        offset=str(event.offset) if event.offset is not None else None,
    )


def _join(body: Any) -> bytes:
    """An AMQP data body: bytes, or an iterable of byte sections."""
    return body if isinstance(body, bytes) else b"".join(body)
