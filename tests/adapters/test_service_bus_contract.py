"""Service Bus adapter: what it hands the real SDK (no namespace is reachable here).

The messages are the SDK's own `ServiceBusMessage` objects, inspected through the AMQP
message the SDK would put on the wire; the calls on the sender are bound against the real
`ServiceBusSender` signatures, so a renamed or misused parameter fails here.
"""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
)

from adapters.service_bus import (
    ServiceBusBus,
    ServiceBusDeadLetters,
    build_message,
    replay_message,
)
from orchestrator import telemetry
from orchestrator.messages import Envelope, parse_envelope
from orchestrator.ports import ScheduledHandle
from tests.devhost.host.test_real_messaging import check_sdk_call
from tests.telemetry import install_tracing


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


def traced_envelope() -> Envelope:
    """`envelope()` sent from inside a span, as the outbox sends it (`Outbox.send`)."""
    install_tracing()
    with telemetry.span("effect send_message", **{"retrain.model": "sb-contract"}):
        traceparent = telemetry.current_traceparent()
    assert traceparent is not None and telemetry.TRACEPARENT.match(traceparent)
    return envelope().model_copy(update={"traceparent": traceparent})


def test_a_traced_envelope_s_message_carries_its_context_where_the_sdk_puts_it():
    traced = traced_envelope()
    sender = RecordingSender()
    bus = ServiceBusBus(sender)  # type: ignore[arg-type]
    bus.send(traced)
    bus.schedule(traced, datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    sent = [sender.calls[0][1].arguments["message"], sender.calls[1][1].arguments["messages"]]
    for message in sent:
        properties = message.raw_amqp_message.application_properties
        # The SDK's own keys (bytes), both of them: older receivers read Diagnostic-Id.
        assert properties[b"traceparent"] == properties[b"Diagnostic-Id"] == traced.traceparent
        assert {properties["type"], properties["model"]} == {"GateCheck", "churn"}
        # The body still carries it too (the storage-queue transport has no properties).
        assert parse_envelope(b"".join(message.body)).traceparent == traced.traceparent
    untraced = build_message(envelope()).raw_amqp_message.application_properties
    assert not {b"traceparent", b"Diagnostic-Id", "traceparent", "Diagnostic-Id"} & set(untraced)


def test_with_the_sdk_s_tracing_on_the_wire_carries_the_app_s_context_once():
    """Azure Monitor turns the Service Bus SDK's own tracing on: on send it adds its message
    span's context to the application properties where absent. The app's is kept, and each
    key is on the wire once (AMQP map keys are unique)."""
    from azure.core.settings import settings
    from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan
    from azure.servicebus._pyamqp._decode import decode_payload
    from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

    traced = traced_envelope()
    settings.tracing_implementation = OpenTelemetrySpan
    try:
        batch = ServiceBusMessageBatch()
        with telemetry.span("another span: the SDK's message span would be its child"):
            batch.add_message(build_message(traced))  # the SDK's send path: traced here
    finally:
        settings.tracing_implementation.unset_value()
    [outgoing] = batch._messages  # what send_messages encodes
    wire = PyamqpTransport.encode_message(outgoing)
    # Keys are AMQP str8 (0xa1, length): the body's JSON "traceparent" is not counted.
    assert wire.count(b"\xa1\x0btraceparent") == 1
    assert wire.count(b"\xa1\x0dDiagnostic-Id") == 1
    # What a receiver decodes from those bytes: the app's context, under both keys.
    decoded = decode_payload(memoryview(wire)).application_properties
    context = traced.traceparent.encode()  # type: ignore[union-attr]
    assert decoded == {
        b"type": b"GateCheck",
        b"model": b"churn",
        b"promotion_id": b"p1",
        b"Diagnostic-Id": context,
        b"traceparent": context,
    }


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


# --------------------------------------------------------------------------- dead-letter queue
#
# `ServiceBusDeadLetters` on a client whose every call is bound against the real SDK's
# signature (tests/devhost/host/test_real_messaging.py's `check_sdk_call`), over the SDK's own
# `ServiceBusReceivedMessage` built from the AMQP transfer a dead-letter queue delivers.


def dead_lettered(  # type: ignore[no-untyped-def]
    body: bytes,
    sequence_number: int,
    reason: str = "MaxDeliveryCountExceeded",
    traceparent: str | None = None,
):
    from azure.servicebus import ServiceBusReceivedMessage
    from azure.servicebus._pyamqp.message import Header, Properties
    from azure.servicebus._pyamqp.message import Message as AmqpMessage

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    amqp = AmqpMessage(
        data=[body],
        header=Header(delivery_count=10),
        properties=Properties(
            message_id=f"keyed-{sequence_number}".encode(),
            content_type=b"application/json",
            subject=b"GateCheck",
        ),
        application_properties={
            b"type": b"GateCheck",
            b"model": b"churn",
            b"DeadLetterReason": reason.encode(),
            b"DeadLetterErrorDescription": b"Message could not be consumed after 10 attempts.",
            **(
                {b"Diagnostic-Id": traceparent.encode(), b"traceparent": traceparent.encode()}
                if traceparent
                else {}
            ),
        },
        message_annotations={
            b"x-opt-sequence-number": sequence_number,
            b"x-opt-enqueued-time": now_ms,
            b"x-opt-locked-until": now_ms + 60_000,
        },
    )
    return ServiceBusReceivedMessage(amqp, receiver=None, lock_token=uuid.uuid4())


class FakeDeadLetterReceiver:
    def __init__(self, messages: list[Any]) -> None:
        self.pending = list(messages)
        self.settled: list[tuple[str, int]] = []

    def __enter__(self) -> FakeDeadLetterReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def peek_messages(self, *args: Any, **kwargs: Any) -> list[Any]:
        check_sdk_call(ServiceBusReceiver.peek_messages, self, *args, **kwargs)
        return list(self.pending)

    def receive_messages(self, *args: Any, **kwargs: Any) -> list[Any]:
        call = check_sdk_call(ServiceBusReceiver.receive_messages, self, *args, **kwargs)
        batch = self.pending[: call["max_message_count"]]
        self.pending = self.pending[len(batch) :]
        return batch

    def complete_message(self, *args: Any, **kwargs: Any) -> None:
        message = check_sdk_call(ServiceBusReceiver.complete_message, self, *args, **kwargs)
        self.settled.append(("complete", message["message"].sequence_number))

    def abandon_message(self, *args: Any, **kwargs: Any) -> None:
        message = check_sdk_call(ServiceBusReceiver.abandon_message, self, *args, **kwargs)
        self.settled.append(("abandon", message["message"].sequence_number))


class FakeClient:
    def __init__(self, receiver: FakeDeadLetterReceiver) -> None:
        self.receiver = receiver
        self.sender = RecordingSender()
        self.opened: list[dict[str, Any]] = []

    def get_queue_receiver(self, *args: Any, **kwargs: Any) -> FakeDeadLetterReceiver:
        self.opened.append(
            check_sdk_call(ServiceBusClient.get_queue_receiver, self, *args, **kwargs)
        )
        return self.receiver

    def get_queue_sender(self, *args: Any, **kwargs: Any) -> Any:
        check_sdk_call(ServiceBusClient.get_queue_sender, self, *args, **kwargs)
        sender = self.sender

        class Context:
            def __enter__(self) -> RecordingSender:
                return sender

            def __exit__(self, *exc_info: object) -> None:
                return None

        return Context()


def test_a_replay_copies_the_body_byte_for_byte_without_the_dead_letter_bookkeeping():
    body = envelope().to_bytes()
    copy = replay_message(dead_lettered(body, 77))
    amqp = copy.raw_amqp_message
    assert b"".join(copy.body) == body  # the bytes an internal message's MAC covers
    assert copy.message_id == "replay-77-keyed-77"
    assert amqp.properties.subject == "GateCheck"
    assert amqp.properties.content_type == "application/json"
    assert amqp.application_properties == {
        "type": "GateCheck",
        "model": "churn",
        "replayed_from_sequence_number": 77,
    }


def test_a_replayed_traced_message_carries_its_context_once_with_the_sdk_s_tracing_on():
    from azure.core.settings import settings
    from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan
    from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

    traced = traced_envelope()
    assert traced.traceparent is not None
    copy = replay_message(dead_lettered(traced.to_bytes(), 78, traceparent=traced.traceparent))
    settings.tracing_implementation = OpenTelemetrySpan
    try:
        batch = ServiceBusMessageBatch()
        with telemetry.span("the SDK's message span would be a child of this one"):
            batch.add_message(copy)
    finally:
        settings.tracing_implementation.unset_value()
    wire = PyamqpTransport.encode_message(batch._messages[0])
    assert wire.count(b"\xa1\x0btraceparent") == 1
    assert wire.count(b"\xa1\x0dDiagnostic-Id") == 1
    properties = copy.raw_amqp_message.application_properties
    assert properties[b"traceparent"] == properties[b"Diagnostic-Id"] == traced.traceparent


def test_replay_receives_from_the_dead_letter_queue_sends_the_copy_then_completes_it():
    target, other = dead_lettered(b'{"n": 1}', 8), dead_lettered(b'{"n": 2}', 9)
    client = FakeClient(FakeDeadLetterReceiver([other, target]))
    sent = ServiceBusDeadLetters(client, max_wait_seconds=1).replay("orchestrator", 8)  # type: ignore[arg-type]

    assert sent is not None
    [opened] = client.opened
    assert opened["queue_name"] == "orchestrator"
    assert opened["sub_queue"] == ServiceBusSubQueue.DEAD_LETTER
    assert opened["receive_mode"] == ServiceBusReceiveMode.PEEK_LOCK
    [(name, bound)] = client.sender.calls
    assert name == "send_messages"
    assert b"".join(bound.arguments["message"].body) == b'{"n": 1}'
    # Sent before it is completed; the other dead letter goes straight back.
    assert client.receiver.settled == [("complete", 8), ("abandon", 9)]


def test_replay_of_a_dead_letter_that_is_gone_sends_nothing():
    client = FakeClient(FakeDeadLetterReceiver([dead_lettered(b"{}", 9)]))
    assert ServiceBusDeadLetters(client, max_wait_seconds=1).replay("orchestrator", 8) is None  # type: ignore[arg-type]
    assert client.sender.calls == []
    assert client.receiver.settled == [("abandon", 9)]


def test_peek_lists_the_dead_letter_queue_with_its_reason():
    client = FakeClient(FakeDeadLetterReceiver([dead_lettered(b"{}", 5, "TTLExpiredException")]))
    [message] = ServiceBusDeadLetters(client).peek("approvals", 10)  # type: ignore[arg-type]
    assert message.dead_letter_reason == "TTLExpiredException"
    assert client.opened[0]["sub_queue"] == ServiceBusSubQueue.DEAD_LETTER


def test_send_raw_sends_the_body_as_given_under_the_replay_id():
    sender = RecordingSender()
    ServiceBusBus(sender).send_raw(b'{"exact": "bytes"}', "replay-orchestrator/2026/x.json")  # type: ignore[arg-type]
    [(name, bound)] = sender.calls
    message = bound.arguments["message"]
    assert name == "send_messages"
    assert b"".join(message.body) == b'{"exact": "bytes"}'
    assert message.message_id == "replay-orchestrator/2026/x.json"


def test_a_refused_replay_sends_nothing_and_leaves_the_dead_letter_where_it_is():
    """The CLI refuses a person's command (it carries their token): nothing is sent, and the
    dead letter goes back to the dead-letter queue, not completed."""
    person = dead_lettered(b'{"type": "ApprovalDecision", "auth": "eyJ.token.sig"}', 8)
    client = FakeClient(FakeDeadLetterReceiver([person]))

    def refuse(body: bytes) -> None:
        raise PermissionError("a person's command")

    with pytest.raises(PermissionError):
        ServiceBusDeadLetters(client, max_wait_seconds=1).replay("approvals", 8, refuse)  # type: ignore[arg-type]
    assert client.sender.calls == []
    assert client.receiver.settled == [("abandon", 8)]
