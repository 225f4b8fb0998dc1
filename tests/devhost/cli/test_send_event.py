"""`send-event`: many blobs an event on the data-events hub, in the schema the app parses,
taken by the app's real `data_events` function under devhost (Azurite, the local stand-in for
the hub), and with Event Hubs through the SDK's own batches."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.eventhub import EventDataBatch

from adapters.azurite import Azurite
from devhost.cli import events
from devhost.cli.commands import BadInput
from devhost.cli.main import main
from devhost.host.dev_host import DevHost
from domain.policy import parse_policy
from orchestrator.bootstrap import Runtime, set_runtime
from tests.harness import RecordingTrainingBackend, policy_yaml
from triggers.payloads import parse_event

# A window that stays open for the test: the items wait, nothing trains.
POLICY = policy_yaml("churn", retrain="{debounce: 1h, min_new_files: 1, cooldown: 0s}")


def write_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        file = folder / f"part-{index:03d}.csv"
        file.write_text(f"a,b,label\n{index},1,0\n")
        files.append(file)
    return files


@pytest.fixture
def app(make_runtime, azurite: Azurite) -> Iterator[tuple[Runtime, DevHost]]:
    """A runtime on Azurite with its own data-events hub, and the real function_app under
    devhost taking that hub (the Event Grid subscription on an empty container of its own,
    so only the events sent here bring data)."""
    hub = f"hub{uuid.uuid4().hex[:12]}"
    runtime = make_runtime(
        {"churn": POLICY},
        DataStorage=azurite.connection_string,
        DATA_CONTAINER="training-data",
        DATA_EVENTS_HUB=hub,
        training=RecordingTrainingBackend(),
    )
    settings = runtime.settings
    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "DataStorage": azurite.connection_string,
        "POLICY_DIR": str(settings.policy_dir),
        "RETRAIN_LOCAL_DIR": str(settings.local_dir),
        "STATE_CONTAINER": settings.state_container,
        "ORCHESTRATOR_QUEUE": settings.orchestrator_queue,
        "APPROVALS_QUEUE": settings.approvals_queue,
        "LIFECYCLE_EVENTS_HUB": settings.lifecycle_events_hub,
        "DATA_EVENTS_HUB": hub,
        "DATA_CONTAINER": "training-data",
        "DEVHOST_EVENT_GRID_SUBSCRIPTIONS": f"data_blob_created=DataStorage:empty{hub}",
    }
    set_runtime(runtime)  # the functions use this runtime (its recording training backend)
    host = DevHost(
        "function_app", values, port=0, serve_http=False, background_polling=False, azurite=False
    )
    try:
        host.start()
        yield runtime, host
    finally:
        host.stop()
        set_runtime(None)


def deliver(host: DevHost, runtime: Runtime, expected: int) -> dict[str, Any]:
    for _ in range(20):
        host.run_pending_once()
        retrain = runtime.queries.model_status("churn")["retrain"]
        if retrain["pending"]["count"] >= expected:
            return retrain
    raise AssertionError(f"pending: {retrain['pending']}")


def test_send_event_for_files_makes_one_window_with_every_file(app, tmp_path, capsys):
    runtime, host = app
    files = write_files(tmp_path / f"batch-{uuid.uuid4().hex[:8]}", 25)

    code = main(
        ["send-event", "churn", str(files[0].parent), "--per-event", "10", "--json"],
        runtime=runtime,
    )

    assert code == 0
    sent = json.loads(capsys.readouterr().out)
    assert (sent["items"], sent["events"], sent["uploaded"]) == (25, 3, 25)
    assert sent["route"] == f"storage-queue:{runtime.settings.data_events_hub}"
    retrain = deliver(host, runtime, 25)
    assert retrain["pending"]["count"] == 25
    assert retrain["window"] is not None  # one window holds them all
    # Sent again (same blobs, same versions): duplicates, nothing new.
    events.send_events(runtime, "churn", blob_names=[b["blob"] for b in sent["blobs"]])
    host.run_pending_once()
    assert runtime.queries.model_status("churn")["retrain"]["pending"]["count"] == 25


def test_data_ready_events_for_blobs_already_there(app, tmp_path):
    runtime, host = app
    folder = f"churn/ready-{uuid.uuid4().hex[:8]}/"
    container = runtime.blob_service.get_container_client("training-data")
    for index in range(7):
        container.upload_blob(f"{folder}{index}.csv", b"a,label\n1,0\n", overwrite=True)

    sent = events.send_events(
        runtime, "churn", under=folder.removeprefix("churn/"), event_format="data-ready"
    )

    assert (len(sent.blobs), sent.events) == (7, 1)
    retrain = deliver(host, runtime, 7)
    assert retrain["pending"]["count"] == 7
    assert all(uri.startswith(container.url) for uri in retrain["pending"]["sample"])


def test_bad_input_is_refused_before_anything_is_sent(make_runtime, tmp_path):
    runtime = make_runtime({"churn": POLICY})
    with pytest.raises(BadInput, match="not under churn's data prefix"):
        events.send_events(runtime, "churn", blob_names=["other/x.csv"])
    with pytest.raises(BadInput, match="no blob 'churn/missing-"):
        events.send_events(runtime, "churn", blob_names=[f"churn/missing-{uuid.uuid4()}.csv"])
    with pytest.raises(BadInput, match="--per-event must be from 1 to 1000"):
        events.send_events(runtime, "churn", files=[tmp_path], per_event=5000)
    with pytest.raises(BadInput, match="no such file or folder"):
        events.send_events(runtime, "churn", files=[tmp_path / "nope.csv"])
    with pytest.raises(BadInput, match="needs files"):
        events.send_events(runtime, "churn")


def named_blobs(count: int, base: str = "http://127.0.0.1:10000/devstoreaccount1") -> list[Any]:
    return [
        events.NamedBlob(
            "training-data",
            f"churn/2026/11/part-{index:05d}.csv",
            f"{base}/training-data/churn/2026/11/part-{index:05d}.csv",
            f'"0x8DC{index:012X}"',
            1234,
        )
        for index in range(count)
    ]


@pytest.mark.parametrize("event_format", events.EVENT_FORMATS)
def test_every_packed_event_is_one_the_app_parses_within_the_limits(event_format):
    policy = parse_policy(POLICY)
    blobs = named_blobs(700)
    if event_format == "event-grid":
        documents = [events.blob_created_document(blob) for blob in blobs]
    else:
        documents = [events.data_ready_document("churn", blob) for blob in blobs]

    bodies = events.pack(documents, max_items=250, max_bytes=events.MAX_EVENT_BYTES)

    assert len(bodies) > 700 // 250  # the size limit, not only the count, splits them
    assert all(len(body) <= events.MAX_EVENT_BYTES for body in bodies)
    account = "http://127.0.0.1:10000/devstoreaccount1"
    items = [item for body in bodies for item in parse_event(body, {"churn": policy}, account)]
    assert [model for model, _ in items] == ["churn"] * 700
    keys = {item.key for _, item in items}
    assert len(keys) == 700
    if event_format == "event-grid":  # the key a BlobCreated event from Event Grid gives
        assert "blob:training-data/churn/2026/11/part-00000.csv@0x8DC000000000000" in keys


def test_pack_respects_the_item_count():
    documents = [{"n": index} for index in range(10)]
    bodies = events.pack(documents, max_items=4, max_bytes=10_000)
    assert [len(json.loads(body)) for body in bodies] == [4, 4, 2]
    with pytest.raises(BadInput, match="over 10"):
        events.pack([{"long": "x" * 20}], max_items=4, max_bytes=10)


class BatchingProducer:
    """The SDK's producer as far as sending goes: its own EventDataBatch (the real class,
    which refuses an event past its size limit), sends recorded."""

    def __init__(self, max_size_in_bytes: int) -> None:
        self.max_size = max_size_in_bytes
        self.sent: list[list[bytes]] = []

    def create_batch(self) -> EventDataBatch:
        return EventDataBatch(max_size_in_bytes=self.max_size)

    def send_batch(self, batch: EventDataBatch) -> None:
        self.sent.append([b"".join(event.body) for event in batch._internal_events])


def test_event_hubs_gets_many_events_a_send_within_the_hub_s_batch_size():
    documents = [events.blob_created_document(blob) for blob in named_blobs(300)]
    bodies = events.pack(documents, max_items=20, max_bytes=events.MAX_EVENT_BYTES)
    producer = BatchingProducer(max_size_in_bytes=64 * 1024)

    sends = events.send_to_event_hubs(producer, bodies)  # type: ignore[arg-type]

    assert sends == len(producer.sent) > 1
    assert [body for batch in producer.sent for body in batch] == bodies
    assert all(len(batch) > 1 for batch in producer.sent[:-1])
