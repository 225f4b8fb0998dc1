"""The receivers devhost uses for a real Service Bus namespace and a real event hub.

Nothing here reaches Azure: `ServiceBusClient.from_connection_string` and
`EventHubConsumerClient.from_connection_string` hand back fakes of the client surface the
pollers call. Every call is checked against the installed SDK's own signature, and what flows
through is the SDK's own types: `ServiceBusReceivedMessage` and `EventData` built from AMQP
transfers as the SDK's receivers build them, a real `PartitionContext` over the SDK's
in-memory checkpoint store (what `receive_batch` uses when no store is given).
"""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.eventhub import EventData, EventHubConsumerClient, PartitionContext
from azure.eventhub._eventprocessor.in_memory_checkpoint_store import InMemoryCheckpointStore
from azure.eventhub._pyamqp.message import Message as EventHubAmqpMessage
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
)
from azure.servicebus._pyamqp.message import Header, Properties
from azure.servicebus._pyamqp.message import Message as ServiceBusAmqpMessage
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusError

from adapters.azurite import Azurite
from devhost.host.connections import MessagingConnection
from devhost.host.discovery import discover
from devhost.host.invoke import Invoker
from devhost.host.pollers import (
    PROCESSING_VISIBILITY,
    EventHubReceiverPoller,
    ServiceBusReceiverPoller,
)
from tests.devhost.host.conftest import HostFactory

NAMESPACE = "devhost-test.servicebus.windows.net"
# Service Bus and Event Hubs connection strings have the same shape; nothing connects to it.
CONNECTION = MessagingConnection(
    connection_string=f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=test;"
    "SharedAccessKey=<test-key>"
)


def check_sdk_call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The arguments as the SDK's `method` would take them; a TypeError where it would raise
    one, and also for a keyword it would only swallow in **kwargs (ignored, never an error)."""
    signature = inspect.signature(method)
    bound = signature.bind(*args, **kwargs)
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and bound.arguments.get(name):
            raise TypeError(f"{method.__qualname__} has no option {sorted(bound.arguments[name])}")
    bound.apply_defaults()
    return dict(bound.arguments)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- Service Bus ------------------------------------------------------------------------------


class FakeServiceBusReceiver:
    """A ServiceBusReceiver's surface over scripted deliveries; records how each is settled."""

    def __init__(
        self,
        messages: list[ServiceBusReceivedMessage] | None = None,
        open_error: Exception | None = None,
    ) -> None:
        self.pending = list(messages or [])
        self.open_error = open_error
        self.options: dict[str, Any] = {}
        self.settled: list[tuple[str, str]] = []
        self.receive_calls: list[dict[str, Any]] = []
        self.closed = False

    def __enter__(self) -> FakeServiceBusReceiver:
        if self.open_error is not None:
            raise self.open_error  # as opening the link fails, e.g. no session is available
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def receive_messages(self, *args: Any, **kwargs: Any) -> list[ServiceBusReceivedMessage]:
        call = check_sdk_call(ServiceBusReceiver.receive_messages, self, *args, **kwargs)
        self.receive_calls.append(call)
        count = call["max_message_count"] or 1
        batch, self.pending = self.pending[:count], self.pending[count:]
        return batch

    def _settle(self, action: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        message = check_sdk_call(method, self, *args, **kwargs)["message"]
        assert isinstance(message, ServiceBusReceivedMessage)
        assert str(message.message_id) not in {done for _, done in self.settled}, "settled twice"
        self.settled.append((action, str(message.message_id)))

    def complete_message(self, *args: Any, **kwargs: Any) -> None:
        self._settle("complete", ServiceBusReceiver.complete_message, *args, **kwargs)

    def abandon_message(self, *args: Any, **kwargs: Any) -> None:
        self._settle("abandon", ServiceBusReceiver.abandon_message, *args, **kwargs)

    def dead_letter_message(self, *args: Any, **kwargs: Any) -> None:
        self._settle("dead-letter", ServiceBusReceiver.dead_letter_message, *args, **kwargs)

    def close(self) -> None:
        self.closed = True


class FakeServiceBusClient:
    """ServiceBusClient's receiver factories: hands out the scripted receivers in order."""

    def __init__(self, receivers: list[FakeServiceBusReceiver]) -> None:
        self.receivers = list(receivers)
        self.opened: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []
        self.closed = False

    def _next(self, kind: str, entity: tuple[str, ...], options: dict[str, Any]) -> Any:
        self.opened.append((kind, entity, options))
        receiver = self.receivers.pop(0)
        receiver.options = options
        return receiver

    def get_queue_receiver(self, *args: Any, **kwargs: Any) -> FakeServiceBusReceiver:
        call = check_sdk_call(ServiceBusClient.get_queue_receiver, self, *args, **kwargs)
        return self._next("queue", (call["queue_name"],), kwargs)

    def get_subscription_receiver(self, *args: Any, **kwargs: Any) -> FakeServiceBusReceiver:
        call = check_sdk_call(ServiceBusClient.get_subscription_receiver, self, *args, **kwargs)
        return self._next("subscription", (call["topic_name"], call["subscription_name"]), kwargs)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def service_bus(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeServiceBusClient]:
    """Script the client devhost.host.messaging builds from a connection string."""
    real_factory = ServiceBusClient.from_connection_string

    def install(*receivers: FakeServiceBusReceiver) -> FakeServiceBusClient:
        client = FakeServiceBusClient(list(receivers))

        def from_connection_string(*args: Any, **kwargs: Any) -> FakeServiceBusClient:
            call = check_sdk_call(real_factory, *args, **kwargs)
            assert call["conn_str"] == CONNECTION.connection_string
            return client

        monkeypatch.setattr(ServiceBusClient, "from_connection_string", from_connection_string)
        return client

    return install


def received_message(
    body: bytes, *, delivery_count: int = 1, properties: dict[bytes, bytes] | None = None
) -> ServiceBusReceivedMessage:
    """A peek-locked message as ServiceBusReceiver.receive_messages returns it: the SDK's class
    over the AMQP transfer the broker sends (header, properties, broker annotations)."""
    now = datetime.now(UTC)
    amqp = ServiceBusAmqpMessage(
        data=[body],
        header=Header(delivery_count=delivery_count),
        properties=Properties(
            message_id=uuid.uuid4().hex.encode(), content_type=b"application/json"
        ),
        application_properties=properties or {},
        message_annotations={
            b"x-opt-sequence-number": 42,
            b"x-opt-enqueued-time": _epoch_ms(now),
            b"x-opt-locked-until": _epoch_ms(now) + 60_000,
        },
    )
    return ServiceBusReceivedMessage(amqp, receiver=None, lock_token=uuid.uuid4())


def invoker_for(app: func.FunctionApp) -> Invoker:
    [spec] = discover(app, {})
    return Invoker(spec, lambda *_: None, Path.cwd(), retry_delay_scale=0.0)


def queue_app(handle: Callable[[func.ServiceBusMessage], None]) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.service_bus_queue_trigger(
        arg_name="message", queue_name="commands", connection="ServiceBusConnection"
    )
    def commands(message: func.ServiceBusMessage) -> None:
        handle(message)

    return app


def test_handled_messages_are_completed_and_failed_ones_abandoned(service_bus) -> None:
    good = received_message(b'{"type": "GateCheck"}', properties={b"type": b"GateCheck"})
    bad = received_message(b'{"fail": true}', delivery_count=3)
    later = received_message(b'{"type": "TrainingJobCheck"}')
    receiver = FakeServiceBusReceiver([good, bad, later])
    client = service_bus(receiver)
    seen: list[func.ServiceBusMessage] = []

    def handle(message: func.ServiceBusMessage) -> None:
        seen.append(message)
        if b"fail" in message.get_body():
            raise RuntimeError("transient")

    poller = ServiceBusReceiverPoller(invoker_for(queue_app(handle)), CONNECTION, max_wait=0.5)

    assert poller.poll_once() == 3
    # Abandoned, the broker redelivers it and dead-letters it itself after MaxDeliveryCount
    # (as with the Functions host); a message the app can never handle it records and returns.
    assert receiver.settled == [
        ("complete", good.message_id),
        ("abandon", bad.message_id),
        ("complete", later.message_id),
    ]
    assert client.opened[0][:2] == ("queue", ("commands",))
    assert receiver.receive_calls[0]["max_wait_time"] == 0.5
    first = seen[0]
    assert isinstance(first, func.ServiceBusMessage)
    assert first.get_body() == b'{"type": "GateCheck"}'
    assert first.message_id == good.message_id
    assert first.application_properties == {"type": "GateCheck"}
    assert first.content_type == "application/json"
    assert first.sequence_number == 42
    assert seen[1].delivery_count == 3  # the broker's count reaches the function

    assert poller.poll_once() == 0  # nothing left: nothing settled again
    poller.close()
    assert receiver.closed and client.closed


def test_locks_are_renewed_while_a_batch_is_handled(service_bus) -> None:
    receiver = FakeServiceBusReceiver()
    service_bus(receiver)

    poller = ServiceBusReceiverPoller(invoker_for(queue_app(lambda _: None)), CONNECTION, 0.1)

    renewer = receiver.options["auto_lock_renewer"]
    assert isinstance(renewer, AutoLockRenewer)
    # As long as the host's maxAutoLockRenewalDuration (the SDK keeps it unexposed).
    assert renewer._max_lock_renewal_duration == PROCESSING_VISIBILITY.total_seconds()
    poller.close()
    with pytest.raises(ServiceBusError, match="shutdown"):  # its threads end with the poller
        renewer.register(receiver, received_message(b"{}"))  # type: ignore[arg-type]


def test_topic_subscription_with_sessions_reads_the_next_available_session(service_bus) -> None:
    message = received_message(b"{}")
    no_session = FakeServiceBusReceiver(open_error=OperationTimeoutError(message="no session"))
    session = FakeServiceBusReceiver([message])
    client = service_bus(no_session, session)
    app = func.FunctionApp()
    seen: list[bytes] = []

    @app.service_bus_topic_trigger(
        arg_name="message",
        topic_name="events",
        subscription_name="devhost",
        is_sessions_enabled=True,
        connection="ServiceBusConnection",
    )
    def on_event(message: func.ServiceBusMessage) -> None:
        seen.append(message.get_body())

    poller = ServiceBusReceiverPoller(invoker_for(app), CONNECTION, max_wait=0.2)

    assert poller.poll_once() == 0  # no session had messages within max_wait_time
    assert poller.poll_once() == 1
    assert seen == [b"{}"]
    assert session.settled == [("complete", message.message_id)]
    assert session.closed  # one session per pass
    kind, entity, options = client.opened[1]
    assert (kind, entity) == ("subscription", ("events", "devhost"))
    assert options["session_id"] == NEXT_AVAILABLE_SESSION
    assert options["max_wait_time"] == 0.2
    poller.close()


@pytest.mark.azurite
def test_the_host_uses_the_real_receiver_when_a_namespace_is_configured(
    make_host: HostFactory, azurite: Azurite, service_bus
) -> None:
    message = received_message(b'{"type": "GateCheck"}')
    receiver = FakeServiceBusReceiver([message])
    service_bus(receiver)
    seen: list[bytes] = []

    host = make_host(
        queue_app(lambda m: seen.append(m.get_body())),
        {"ServiceBusConnection": CONNECTION.connection_string},
    )

    assert host.run_pending_once() == 1
    assert seen == [b'{"type": "GateCheck"}']
    assert receiver.settled == [("complete", message.message_id)]
    host.stop()
    assert receiver.closed


# --- Event Hubs -------------------------------------------------------------------------------


class FakeEventHubConsumer:
    """EventHubConsumerClient.receive_batch: calls on_event_batch with the scripted batches,
    each with a real PartitionContext over the SDK's in-memory checkpoint store, then blocks
    until close(), as the real one does."""

    def __init__(self, batches: list[tuple[str, list[EventData]]]) -> None:
        self.batches = batches
        self.hub = ""
        self.consumer_group = ""
        self.checkpoints = InMemoryCheckpointStore()
        self.options: dict[str, Any] = {}
        self.callback_errors: list[BaseException] = []
        self.delivered = threading.Event()
        self.closed = threading.Event()

    def receive_batch(self, *args: Any, **kwargs: Any) -> None:
        self.options = check_sdk_call(EventHubConsumerClient.receive_batch, self, *args, **kwargs)
        on_event_batch = self.options["on_event_batch"]
        contexts: dict[str, PartitionContext] = {}
        for partition_id, events in self.batches:
            context = contexts.setdefault(
                partition_id,
                PartitionContext(
                    NAMESPACE, self.hub, self.consumer_group, partition_id, self.checkpoints
                ),
            )
            try:
                on_event_batch(context, events)
            except BaseException as exc:  # the SDK would drop the partition and replay it
                self.callback_errors.append(exc)
        self.delivered.set()
        self.closed.wait(timeout=30)

    def checkpoint(self, partition_id: str) -> dict[str, Any]:
        found = self.checkpoints.list_checkpoints(NAMESPACE, self.hub, self.consumer_group)
        [checkpoint] = [c for c in found if c["partition_id"] == partition_id]
        return checkpoint

    def close(self) -> None:
        self.closed.set()


@pytest.fixture
def event_hub(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeEventHubConsumer]:
    """Script the consumer devhost.host.messaging builds from a connection string."""
    real_factory = EventHubConsumerClient.from_connection_string

    def install(batches: list[tuple[str, list[EventData]]]) -> FakeEventHubConsumer:
        consumer = FakeEventHubConsumer(batches)

        def from_connection_string(*args: Any, **kwargs: Any) -> FakeEventHubConsumer:
            call = check_sdk_call(real_factory, *args, **kwargs)
            assert call["conn_str"] == CONNECTION.connection_string
            consumer.hub, consumer.consumer_group = call["eventhub_name"], call["consumer_group"]
            return consumer

        monkeypatch.setattr(
            EventHubConsumerClient, "from_connection_string", from_connection_string
        )
        return consumer

    return install


def received_event(body: bytes | None, sequence_number: int, *, value: Any = None) -> EventData:
    """An event as the consumer receives it: EventData over the AMQP transfer, with the broker's
    annotations (sequence number, offset, enqueued time, partition key)."""
    annotations = {
        b"x-opt-sequence-number": sequence_number,
        b"x-opt-offset": str(sequence_number * 100).encode(),
        b"x-opt-enqueued-time": _epoch_ms(datetime.now(UTC)),
        b"x-opt-partition-key": b"churn",
    }
    if body is not None:
        amqp = EventHubAmqpMessage(data=[body], message_annotations=annotations)
    else:
        amqp = EventHubAmqpMessage(value=value, message_annotations=annotations)
    return EventData._from_message(amqp)  # what EventHubConsumer does with each transfer


def hub_app(handle: Callable[[Any], None], cardinality: func.Cardinality) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.retry(strategy="fixed_delay", max_retry_count="2", delay_interval="00:00:01")
    @app.event_hub_message_trigger(
        arg_name="events",
        event_hub_name="data-ready",
        consumer_group="devhost",
        connection="EventHubConnection",
        cardinality=cardinality,
    )
    def data_ready(events: Any) -> None:
        handle(events)

    return app


@pytest.fixture
def running() -> Iterator[Callable[[EventHubReceiverPoller, FakeEventHubConsumer], None]]:
    """Start a poller's receiver thread and wait until every scripted batch was delivered."""
    started: list[EventHubReceiverPoller] = []

    def run(poller: EventHubReceiverPoller, consumer: FakeEventHubConsumer) -> None:
        started.append(poller)
        poller.start()
        assert consumer.delivered.wait(timeout=30), "the batches were not delivered"

    yield run
    for poller in started:
        poller.close()


def test_batches_reach_the_function_as_a_list_and_are_checkpointed(event_hub, running) -> None:
    first = [received_event(b'{"n": 0}', 1), received_event(b'{"n": 1}', 2)]
    second = [received_event(b'{"n": 2}', 3)]
    consumer = event_hub([("0", first), ("0", []), ("1", second)])
    calls: list[list[func.EventHubEvent]] = []
    poller = EventHubReceiverPoller(
        invoker_for(hub_app(calls.append, func.Cardinality.MANY)), CONNECTION, max_batch_size=8
    )

    running(poller, consumer)

    assert [[event.get_body() for event in call] for call in calls] == [
        [b'{"n": 0}', b'{"n": 1}'],
        [b'{"n": 2}'],
    ]  # the empty batch (max_wait_time passed) invoked nothing
    event = calls[0][1]
    assert isinstance(event, func.EventHubEvent)
    assert (event.sequence_number, event.offset, event.partition_key) == (2, "200", "churn")
    assert event.enqueued_time is not None
    assert consumer.checkpoint("0")["sequence_number"] == 2  # the last of the batch handled
    assert consumer.checkpoint("1")["offset"] == "300"
    assert (consumer.hub, consumer.consumer_group) == ("data-ready", "devhost")
    assert consumer.options["max_batch_size"] == 8
    assert consumer.options["starting_position"] == "@latest"
    assert consumer.callback_errors == []


def test_one_event_per_call_with_cardinality_one(event_hub, running) -> None:
    consumer = event_hub([("0", [received_event(b"a", 1), received_event(b"b", 2)])])
    calls: list[func.EventHubEvent] = []
    poller = EventHubReceiverPoller(
        invoker_for(hub_app(calls.append, func.Cardinality.ONE)), CONNECTION, max_batch_size=8
    )

    running(poller, consumer)

    assert [event.get_body() for event in calls] == [b"a", b"b"]
    assert consumer.checkpoint("0")["sequence_number"] == 2


def test_a_failing_batch_is_retried_by_its_policy_then_checkpointed(event_hub, running) -> None:
    consumer = event_hub([("0", [received_event(b"x", 5)]), ("0", [received_event(b"y", 6)])])
    attempts: list[bytes] = []

    def always_fails(events: list[func.EventHubEvent]) -> None:
        attempts.append(events[0].get_body())
        raise RuntimeError("downstream is down")

    poller = EventHubReceiverPoller(
        invoker_for(hub_app(always_fails, func.Cardinality.MANY)), CONNECTION, max_batch_size=8
    )

    running(poller, consumer)

    # Event Hubs has no redelivery: @app.retry (1 + 2 retries), then the batch is passed.
    assert attempts == [b"x", b"x", b"x", b"y", b"y", b"y"]
    assert consumer.checkpoint("0")["sequence_number"] == 6
    assert consumer.callback_errors == []


def test_an_unlimited_retry_policy_never_checkpoints_past_a_failing_batch(
    event_hub, running
) -> None:
    """`max_retry_count` -1 (as `data_events` has): retried in memory until it succeeds; a host
    stopped while it still fails leaves the checkpoint before the batch."""
    consumer = event_hub([("0", [received_event(b"x", 5)]), ("1", [received_event(b"y", 9)])])
    attempts: list[bytes] = []

    def fails_twice_then_never_again_for_x(events: list[func.EventHubEvent]) -> None:
        body = events[0].get_body()
        attempts.append(body)
        if body == b"y" or attempts.count(b"x") < 3:
            raise RuntimeError("downstream is down")

    app = func.FunctionApp()

    @app.retry(strategy="fixed_delay", max_retry_count="-1", delay_interval="00:00:01")
    @app.event_hub_message_trigger(
        arg_name="events", event_hub_name="data-ready", connection="EventHubConnection"
    )
    def data_ready(events: list[func.EventHubEvent]) -> None:
        fails_twice_then_never_again_for_x(events)

    stopping = threading.Event()
    [spec] = discover(app, {})
    invoker = Invoker(spec, lambda *_: None, Path.cwd(), stopping, retry_delay_scale=0.01)
    poller = EventHubReceiverPoller(invoker, CONNECTION, max_batch_size=8)
    poller.start()
    deadline = time.monotonic() + 30
    while attempts.count(b"y") < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    stopping.set()  # the host stops while "y" still fails
    assert consumer.delivered.wait(timeout=30)
    poller.close()

    assert attempts[:3] == [b"x", b"x", b"x"] and attempts.count(b"y") >= 5
    assert consumer.checkpoint("0")["sequence_number"] == 5  # handled at the third attempt
    found = consumer.checkpoints.list_checkpoints(NAMESPACE, "data-ready", "$Default")
    assert [c["partition_id"] for c in found] == ["0"]  # never past "y"
    assert consumer.callback_errors == []


def test_an_unreadable_batch_never_escapes_to_the_sdk(event_hub, running) -> None:
    # An AMQP value body that is not UTF-8 text cannot be read as a string by the SDK.
    unreadable = received_event(None, 7, value={"raw": b"\xff\xfe"})
    binary = received_event(None, 8, value=b"\xff\xfe")
    consumer = event_hub([("0", [unreadable]), ("0", [binary, received_event(b"ok", 9)])])
    calls: list[list[bytes]] = []
    poller = EventHubReceiverPoller(
        invoker_for(
            hub_app(
                lambda events: calls.append([e.get_body() for e in events]), func.Cardinality.MANY
            )
        ),
        CONNECTION,
        max_batch_size=8,
    )

    running(poller, consumer)

    # Raised into the SDK, the batch would be read again from the last checkpoint, forever.
    assert consumer.callback_errors == []
    assert calls == [[b"\xff\xfe", b"ok"]]  # a binary value is passed as it was sent
    assert consumer.checkpoint("0")["sequence_number"] == 9


@pytest.mark.azurite
def test_the_host_streams_a_real_event_hub_and_closes_it(
    make_host: HostFactory, azurite: Azurite, event_hub
) -> None:
    consumer = event_hub([("0", [received_event(b"e", 1)])])
    calls: list[list[func.EventHubEvent]] = []

    host = make_host(
        hub_app(calls.append, func.Cardinality.MANY),
        {"EventHubConnection": CONNECTION.connection_string},
    )
    assert consumer.delivered.wait(timeout=30)

    assert [[event.get_body() for event in call] for call in calls] == [[b"e"]]
    assert host.run_pending_once() == 0  # events arrive on the receiver's thread, not by polling
    host.stop()
    assert consumer.closed.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("devhost-eventhub")]
