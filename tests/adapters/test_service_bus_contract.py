"""Service Bus adapter: what it hands the real SDK (no namespace is reachable here).

The messages are the SDK's own `ServiceBusMessage` objects, inspected through the AMQP
message the SDK would put on the wire; the calls on the sender are bound against the real
`ServiceBusSender` signatures, so a renamed or misused parameter fails here.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusSender

from adapters.service_bus import ServiceBusBus, build_message
from orchestrator.messages import Envelope, parse_envelope
from orchestrator.ports import ScheduledHandle


class RecordingSender:
    """Stands where a ServiceBusSender stands; checks each call against the real signature."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, inspect.BoundArguments]] = []
        self._next_sequence = 1000

    def _record(self, name: str, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
        real = getattr(ServiceBusSender, name)
        bound = inspect.signature(real).bind(self, *args, **kwargs)
        self.calls.append((name, bound))
        return bound

    def send_messages(self, *args: Any, **kwargs: Any) -> None:
        self._record("send_messages", *args, **kwargs)

    def schedule_messages(self, *args: Any, **kwargs: Any) -> list[int]:
        bound = self._record("schedule_messages", *args, **kwargs)
        messages = bound.arguments["messages"]
        count = len(messages) if isinstance(messages, list) else 1
        self._next_sequence += count
        return list(range(self._next_sequence - count, self._next_sequence))

    def cancel_scheduled_messages(self, *args: Any, **kwargs: Any) -> None:
        self._record("cancel_scheduled_messages", *args, **kwargs)


def envelope() -> Envelope:
    return Envelope.new(
        "GateCheck",
        "churn",
        {"step": "canary-1"},
        message_id="p1:canary-1:check:1",
        promotion_id="p1",
    )


def test_message_carries_id_properties_and_body():
    original = envelope()
    message = build_message(original)
    assert isinstance(message, ServiceBusMessage)
    amqp = message.raw_amqp_message
    assert amqp.properties.message_id == "p1:canary-1:check:1"  # duplicate detection key
    assert amqp.properties.content_type == "application/json"
    assert amqp.properties.subject == "GateCheck"
    assert amqp.application_properties == {
        "type": "GateCheck",
        "model": "churn",
        "promotion_id": "p1",
    }
    assert amqp.properties.group_id is None  # no session unless asked
    assert parse_envelope(b"".join(message.body)) == original


def test_session_id_is_the_model_when_sessions_are_on():
    message = build_message(envelope(), sessions=True)
    assert message.session_id == "churn"
    assert message.raw_amqp_message.properties.group_id == "churn"


def test_send_calls_send_messages_with_one_message():
    sender = RecordingSender()
    ServiceBusBus(sender).send(envelope())  # type: ignore[arg-type]
    [(name, bound)] = sender.calls
    assert name == "send_messages"
    sent = bound.arguments["message"]
    assert isinstance(sent, ServiceBusMessage)
    assert sent.message_id == "p1:canary-1:check:1"


def test_schedule_and_cancel_use_sequence_numbers():
    sender = RecordingSender()
    bus = ServiceBusBus(sender)  # type: ignore[arg-type]
    at = datetime(2026, 11, 22, 12, 0, tzinfo=UTC) + timedelta(minutes=30)
    handle = bus.schedule(envelope(), at)
    assert handle == ScheduledHandle(transport="service-bus", value="1000")
    name, bound = sender.calls[0]
    assert name == "schedule_messages"
    assert bound.arguments["schedule_time_utc"] == at
    scheduled = bound.arguments["messages"]
    assert scheduled.message_id == "p1:canary-1:check:1"
    annotations = scheduled.raw_amqp_message.annotations
    assert annotations[b"x-opt-scheduled-enqueue-time"] == at
    bus.cancel(handle)
    name, bound = sender.calls[1]
    assert name == "cancel_scheduled_messages"
    assert bound.arguments["sequence_numbers"] == 1000
