"""Service Bus, Event Hubs and queue triggers on local storage queues."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from adapters.azurite import Azurite
from adapters.storage_queue_bus import read_dead_letters
from tests.devhost.host.conftest import HostFactory, poll_until, queue_client, send

pytestmark = pytest.mark.azurite


def test_service_bus_trigger_gets_a_real_message(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    received: list[func.ServiceBusMessage] = []
    app = func.FunctionApp()

    @app.service_bus_queue_trigger(arg_name="message", queue_name="%COMMANDS%",
                                   connection="ServiceBusConnection")  # fmt: skip
    def commands(message: func.ServiceBusMessage) -> None:
        received.append(message)

    host = make_host(app, {"COMMANDS": unique_name})
    send(queue_client(azurite, unique_name), json.dumps({"type": "GateCheck"}))

    assert host.run_pending_once() == 1
    assert len(received) == 1
    message = received[0]
    assert isinstance(message, func.ServiceBusMessage)
    assert json.loads(message.get_body()) == {"type": "GateCheck"}
    assert message.delivery_count == 1
    assert message.message_id
    assert message.content_type == "application/json"
    assert message.enqueued_time_utc is not None
    assert host.run_pending_once() == 0


def test_service_bus_failures_retry_then_dead_letter(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    deliveries: list[int] = []
    app = func.FunctionApp()

    @app.service_bus_queue_trigger(arg_name="message", queue_name=unique_name,
                                   connection="ServiceBusConnection")  # fmt: skip
    def always_fails(message: func.ServiceBusMessage) -> None:
        deliveries.append(message.delivery_count)
        raise RuntimeError("transient, forever")

    host = make_host(app, max_deliveries=3)
    send(queue_client(azurite, unique_name), "payload")
    poison = queue_client(azurite, f"{unique_name}-poison")

    poll_until(host, lambda: bool(read_dead_letters(poison)))

    assert deliveries == [1, 2, 3]
    [record] = read_dead_letters(poison)
    assert record["body"] == "payload"
    assert "RuntimeError: transient, forever" in record["reason"]


def test_event_hub_many_gets_a_batch(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    batches: list[list[func.EventHubEvent]] = []
    app = func.FunctionApp()

    @app.event_hub_message_trigger(arg_name="events", event_hub_name="%HUB%",
                                   connection="EventHubConnection",
                                   cardinality=func.Cardinality.MANY)  # fmt: skip
    def data_events(events: list[func.EventHubEvent]) -> None:
        batches.append(events)

    host = make_host(app, {"HUB": unique_name})
    hub = queue_client(azurite, unique_name)
    for number in range(3):
        send(hub, json.dumps({"n": number}))

    assert host.run_pending_once() == 1
    [batch] = batches
    assert all(isinstance(event, func.EventHubEvent) for event in batch)
    assert sorted(json.loads(event.get_body())["n"] for event in batch) == [0, 1, 2]
    assert host.run_pending_once() == 0


def test_event_hub_one_gets_single_events(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    events: list[func.EventHubEvent] = []
    app = func.FunctionApp()

    @app.event_hub_message_trigger(arg_name="event", event_hub_name=unique_name,
                                   connection="EventHubConnection",
                                   cardinality=func.Cardinality.ONE)  # fmt: skip
    def one_event(event: func.EventHubEvent) -> None:
        events.append(event)

    host = make_host(app)
    hub = queue_client(azurite, unique_name)
    send(hub, "a")
    send(hub, "b")

    assert host.run_pending_once() == 2
    assert sorted(event.get_body() for event in events) == [b"a", b"b"]


def test_queue_trigger_and_queue_output(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    app = func.FunctionApp()
    seen: list[func.QueueMessage] = []

    @app.queue_trigger(arg_name="item", queue_name=f"{unique_name}-in",
                       connection="AzureWebJobsStorage")  # fmt: skip
    @app.queue_output(arg_name="forward", queue_name=f"{unique_name}-out",
                      connection="AzureWebJobsStorage")  # fmt: skip
    def relay(item: func.QueueMessage, forward: func.Out[str]) -> None:
        seen.append(item)
        forward.set(item.get_body().decode().upper())

    host = make_host(app)
    send(queue_client(azurite, f"{unique_name}-in"), "hello")

    assert host.run_pending_once() == 1
    assert seen[0].dequeue_count == 1
    [forwarded] = queue_client(azurite, f"{unique_name}-out").peek_messages()
    assert forwarded.content == "SEVMTE8="  # base64("HELLO")


def test_a_message_the_poller_cannot_read_is_dead_lettered_once_and_the_others_go_on(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    received: list[bytes] = []
    app = func.FunctionApp()

    @app.service_bus_queue_trigger(arg_name="message", queue_name=unique_name,
                                   connection="ServiceBusConnection")  # fmt: skip
    def commands(message: func.ServiceBusMessage) -> None:
        received.append(message.get_body())

    host = make_host(app)
    queue = queue_client(azurite, unique_name)
    # A scheduled message whose delivery time cannot be read: it used to crash every pass.
    wrapper = {"_retrain_wrapper": 1, "body": '{"type": "GateCheck"}', "deliver_at": "soon"}
    send(queue, json.dumps(wrapper))
    send(queue, json.dumps({"type": "GateCheck", "n": 2}))
    poison = queue_client(azurite, f"{unique_name}-poison")

    assert host.run_pending_once() == 1  # the readable one; the pass did not stop
    assert [json.loads(body) for body in received] == [{"type": "GateCheck", "n": 2}]
    [record] = read_dead_letters(poison)
    assert "malformed delivery wrapper: deliver_at" in record["reason"]
    assert json.loads(record["body"]) == wrapper
    assert host.run_pending_once() == 0
    assert len(read_dead_letters(poison)) == 1  # once


def test_an_event_hub_batch_that_fails_under_an_unlimited_retry_policy_is_kept(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    calls: list[int] = []
    app = func.FunctionApp()

    @app.retry(strategy="fixed_delay", max_retry_count="-1", delay_interval="00:00:01")
    @app.event_hub_message_trigger(arg_name="events", event_hub_name=unique_name,
                                   connection="EventHubConnection",
                                   cardinality=func.Cardinality.MANY)  # fmt: skip
    def events(events: list[func.EventHubEvent]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise ConnectionError("dead-letter store unreachable")

    host = make_host(app)
    queue = queue_client(azurite, unique_name)
    send(queue, json.dumps({"n": 1}))

    assert host.run_pending_once() == 1  # failed: the checkpoint does not move
    assert calls == [1]
    # Still in the queue (hidden while the invocation's visibility lasts), not deleted.
    assert queue.get_queue_properties().approximate_message_count == 1
