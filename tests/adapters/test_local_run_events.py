"""Azure ML's run events, locally: the local runner announces a job's end on the queue
devhost reads for the data-events hub (real Azurite queue), and the real `data_events`
trigger checks that job at once, before its poll."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from adapters.azurite import Azurite
from adapters.blob_fetch import FetchError
from adapters.local_run_events import LocalRunEvents, local_hub_queue, run_status_changed
from adapters.local_runner import LocalTrainingBackend
from adapters.storage_queue_bus import ensure_queue
from orchestrator.bootstrap import set_runtime
from orchestrator.ports import TrainingRequest
from tests.fakes import FakeWorld, fake_runtime, landed
from tests.harness import policy_yaml
from triggers import data
from triggers.payloads import parse_run_event, run_events_in


def no_such_blob(uri: str, folder: Path) -> list[Path]:
    raise FetchError(f"{uri}: no such blob")


@pytest.fixture
def hub(azurite: Azurite, unique_name: str) -> QueueClient:
    queue = QueueClient.from_connection_string(azurite.connection_string, unique_name)
    return ensure_queue(queue)


@pytest.fixture
def w(tmp_path: Path, hub: QueueClient) -> Iterator[FakeWorld]:
    """The fakes' runtime, training on the real local runner that announces each end."""
    runner = LocalTrainingBackend(
        tmp_path / "runs", "unused", fetch=no_such_blob, on_ended=LocalRunEvents(lambda: hub)
    )
    world = fake_runtime(policy_yaml("churn"), training=runner)
    set_runtime(world.runtime)
    yield world
    set_runtime(None)


def received(hub: QueueClient) -> list[bytes]:
    bodies = []
    for message in hub.receive_messages(messages_per_page=32):
        bodies.append(base64.b64decode(message.content))
        hub.delete_message(message)
    return bodies


def test_a_local_job_s_end_reaches_the_handler_as_azure_ml_s_event(
    w: FakeWorld, hub: QueueClient
) -> None:
    w.handle(landed("churn", 1))
    w.run(until=lambda: w.aggregate("churn").retrain.current_job is not None)
    run_id = w.aggregate("churn").retrain.current_job.run_id  # type: ignore[union-attr]
    w.training.join(run_id, timeout=30)  # type: ignore[attr-defined]

    [body] = received(hub)
    [event] = run_events_in(body)  # the app's own strict parser takes it
    assert (event.data.runId, event.data.runStatus) == (run_id, "Failed")
    assert event.data.experimentName == "churn-retrain"
    check_at = w.bus.scheduled_for(f"{run_id}:check:1")[0]
    data.data_events._function.get_user_function()([func.EventHubEvent(body=body)])

    run = w.aggregate("churn").retrain.runs[-1]
    assert (run.run_id, run.status) == (run_id, "failed")
    assert "no such blob" in (run.error or "")
    assert w.clock() < check_at  # the event, not the poll
    assert w.dead_letters.records == []


def test_the_event_says_each_final_state_and_nothing_else(tmp_path: Path) -> None:
    sent: list[bytes] = []

    class Queue:
        def send_message(self, content: str) -> None:
            sent.append(base64.b64decode(content))

    events = LocalRunEvents(lambda: Queue())  # type: ignore[arg-type, return-value]
    request = TrainingRequest(
        run_id="churn-1", model="churn", pipeline_file="p.yml", data_uris=["x"], experiment="exp"
    )
    for state in ("completed", "failed", "canceled", "running"):
        events(request, state)
    statuses = [parse_run_event(json.loads(body)[0]).data.runStatus for body in sent]
    assert statuses == ["Completed", "Failed", "Canceled"]


def test_a_queue_that_cannot_be_reached_costs_only_the_event(tmp_path: Path) -> None:
    def unreachable() -> QueueClient:
        raise ConnectionError("no Azurite")

    request = TrainingRequest(
        run_id="churn-1", model="churn", pipeline_file="p.yml", data_uris=["x"], experiment="exp"
    )
    LocalRunEvents(unreachable)(request, "completed")  # logged, not raised


def test_the_stand_in_queue_is_the_hub_s_name_when_it_is_a_queue_name() -> None:
    assert local_hub_queue("data-ready") == "data-ready"
    assert local_hub_queue("Data-Ready") == "data-ready"
    assert local_hub_queue("data_ready") is None
    assert parse_run_event(run_status_changed("r-1", "exp", "completed")).data.runId == "r-1"
