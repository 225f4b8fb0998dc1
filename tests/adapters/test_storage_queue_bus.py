"""The storage-queue bus against real Azurite: scheduling, retries, dead letters."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.queue import QueueClient

from adapters.storage_queue_bus import (
    StorageQueueBus,
    StorageQueueConsumer,
    encode_body,
    ensure_queue,
    read_dead_letters,
)
from orchestrator.messages import Envelope, InvalidMessage

pytestmark = pytest.mark.azurite


@pytest.fixture
def queues(azurite, unique_name):
    queue = ensure_queue(QueueClient.from_connection_string(azurite.connection_string, unique_name))
    poison = ensure_queue(
        QueueClient.from_connection_string(azurite.connection_string, f"{unique_name}-poison")
    )
    return queue, poison


def consumer(queues, max_deliveries=3):
    queue, poison = queues
    return StorageQueueConsumer(
        queue,
        poison,
        max_deliveries=max_deliveries,
        visibility_timeout=timedelta(seconds=30),
        retry_base=timedelta(0),
    )


def drain(queues, handler, max_deliveries=3, rounds=10):
    total = []
    for _ in range(rounds):
        result = consumer(queues, max_deliveries).poll(handler)
        total.append(result)
        if result.received == 0:
            break
    return total


def test_sent_message_is_handled_once_and_deleted(queues):
    bus = StorageQueueBus(queues[0])
    sent = Envelope.new("GateCheck", "churn", {"step": "canary-1"})
    bus.send(sent)
    seen: list[Envelope] = []
    drain(queues, lambda envelope, deliveries: seen.append(envelope))
    assert seen == [sent]
    assert consumer(queues).poll(lambda e, d: None).received == 0


def test_scheduled_message_arrives_only_after_its_time(queues):
    bus = StorageQueueBus(queues[0])
    scheduled = Envelope.new("GateCheck", "churn")
    at = datetime.now(UTC) + timedelta(seconds=3)
    bus.schedule(scheduled, at)
    seen: list[Envelope] = []
    consumer(queues).poll(lambda envelope, deliveries: seen.append(envelope))
    assert seen == []  # not before its time
    while datetime.now(UTC) < at + timedelta(seconds=1):
        time.sleep(0.2)
    consumer(queues).poll(lambda envelope, deliveries: seen.append(envelope))
    assert seen == [scheduled]


def test_cancelled_scheduled_message_never_arrives(queues):
    bus = StorageQueueBus(queues[0])
    handle = bus.schedule(
        Envelope.new("GateCheck", "churn"), datetime.now(UTC) + timedelta(seconds=1)
    )
    bus.cancel(handle)
    bus.cancel(handle)  # cancelling twice is harmless
    time.sleep(1.5)
    assert consumer(queues).poll(lambda e, d: None).received == 0


def test_beyond_the_visibility_limit_is_deferred_until_its_time(queues):
    """Past the queue's limit (7 days; 1 s here) a message is re-hidden on receipt until due."""
    limit = timedelta(seconds=1)
    bus = StorageQueueBus(queues[0], max_visibility=limit)
    envelope = Envelope.new("ApprovalTimedOut", "churn")
    due = datetime.now(UTC) + timedelta(seconds=3)
    bus.schedule(envelope, due)
    waiting = StorageQueueConsumer(queues[0], queues[1], max_visibility=limit)
    seen: list[Envelope] = []
    deferred = 0
    while datetime.now(UTC) < due - timedelta(milliseconds=300):
        deferred += waiting.poll(lambda e, d: seen.append(e)).deferred
        time.sleep(0.2)
    assert seen == []
    assert deferred >= 1  # it surfaced at the limit and was hidden again
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        waiting.poll(lambda e, d: seen.append(e))
        time.sleep(0.2)
    assert seen == [envelope]
    assert datetime.now(UTC) >= due


def test_failing_message_is_retried_then_dead_lettered_with_its_reason(queues):
    StorageQueueBus(queues[0]).send(Envelope.new("GateCheck", "churn"))
    attempts: list[int] = []

    def failing(envelope: Envelope, deliveries: int) -> None:
        attempts.append(deliveries)
        raise RuntimeError("MLflow unreachable")

    drain(queues, failing, max_deliveries=3)
    assert attempts == [1, 2, 3]
    [record] = read_dead_letters(queues[1])
    assert "MLflow unreachable" in record["reason"]
    assert "delivered 3 times" in record["reason"]
    assert '"GateCheck"' in record["body"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json at all", "not JSON"),
        ('{"type": "GateCheck"}', "not a valid envelope"),
        ("[1, 2]", "expected an object"),
    ],
)
def test_malformed_message_is_dead_lettered_at_once(queues, raw, reason):
    queues[0].send_message(raw)  # a producer that did not even base64-encode
    calls: list[Envelope] = []
    drain(queues, lambda e, d: calls.append(e))
    assert calls == []
    [record] = read_dead_letters(queues[1])
    assert reason in record["reason"]
    assert record["delivery_count"] == 1  # not retried until the count ran out


def test_handler_rejecting_a_message_dead_letters_it_at_once(queues):
    StorageQueueBus(queues[0]).send(Envelope.new("NoSuchCommand", "churn"))

    def handler(envelope: Envelope, deliveries: int) -> None:
        raise InvalidMessage(f"unknown message type {envelope.type}")

    drain(queues, handler)
    [record] = read_dead_letters(queues[1])
    assert record["reason"] == "unknown message type NoSuchCommand"


WRAPPER = "_retrain_wrapper"
GOOD_BODY = '{"type": "GateCheck"}'


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (encode_body({WRAPPER: 1, "body": GOOD_BODY, "deliver_at": "tomorrow"}), "deliver_at"),
        (encode_body({WRAPPER: 1, "body": GOOD_BODY, "deliver_at": "2026-01-05T12:00:00"}),
         "deliver_at: Input should have timezone info"),
        (encode_body({WRAPPER: 1, "body": GOOD_BODY, "deliver_at": 1767614400}), "deliver_at"),
        (encode_body({WRAPPER: 1, "body": {"type": "GateCheck"}}), "body"),
        (encode_body({WRAPPER: 1, "body": GOOD_BODY, "retries": 3}), "retries"),
        (encode_body({WRAPPER: 2, "body": GOOD_BODY}), WRAPPER),
        (encode_body({WRAPPER: 1}), "body"),
    ],
)  # fmt: skip
def test_a_wrapper_that_cannot_be_read_is_dead_lettered_once_and_the_poll_goes_on(
    queues, content, reason
):
    queues[0].send_message(content)
    good = Envelope.new("GateCheck", "churn")
    StorageQueueBus(queues[0]).send(good)
    seen: list[Envelope] = []

    result = consumer(queues).poll(lambda envelope, deliveries: seen.append(envelope))

    assert (result.dead_lettered, result.completed) == (1, 1)
    assert seen == [good]  # the next message was handled in the same poll
    [record] = read_dead_letters(queues[1])
    assert record["reason"].startswith("malformed delivery wrapper: ")
    assert reason in record["reason"]
    assert record["delivery_count"] == 1
    assert WRAPPER in record["body"]  # the message as it came: nothing is lost
    assert consumer(queues).poll(lambda e, d: None).received == 0  # once, not again


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("%%% not base64, not JSON", "not JSON"),
        (base64.b64encode(b"\xff\xfe\x00garbage").decode(), "not UTF-8"),
        (base64.b64encode(b"[" * 20_000).decode(), "not JSON"),
    ],
)
def test_a_body_that_cannot_be_decoded_is_dead_lettered_once(queues, content, reason):
    queues[0].send_message(content)
    calls: list[Envelope] = []
    drain(queues, lambda e, d: calls.append(e))
    assert calls == []
    [record] = read_dead_letters(queues[1])
    assert reason in record["reason"]
    assert record["delivery_count"] == 1


def test_a_dead_letter_keeps_no_bearer_token(queues):
    signed = Envelope.new("RollbackRequested", "churn", {"reason": "x"})
    signed = signed.model_copy(update={"auth": "eyJhbGciOi.secret.token"})
    StorageQueueBus(queues[0]).send(signed)

    def refuse(envelope: Envelope, deliveries: int) -> None:
        raise InvalidMessage("token expired")

    drain(queues, refuse)
    [record] = read_dead_letters(queues[1])
    assert "eyJhbGciOi" not in json.dumps(record)
