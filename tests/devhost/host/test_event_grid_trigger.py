"""Event Grid triggers under devhost: its emulated BlobCreated subscription delivers one event
per blob name + ETag in the Event Grid schema (url, eTag, contentLength from the listing, the
blob never read), keeps receipts across restarts, and dead-letters a delivery that keeps
failing to `eventgrid-dead-letters`, as a subscription's storage destination does."""

from __future__ import annotations

import json

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

from adapters.azurite import Azurite
from devhost.host.dev_host import DevHost
from devhost.host.pollers import EVENT_GRID_DEAD_LETTERS
from devhost.host.settings import DevHostError
from tests.devhost.host.conftest import HostFactory

pytestmark = pytest.mark.azurite


def build_app(seen: list[dict[str, object]], failing: set[str]) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.event_grid_trigger(arg_name="event")
    def blob_created(event: func.EventGridEvent) -> None:
        if event.subject.endswith(tuple(failing)):
            raise ValueError("cannot take this one")
        seen.append(
            {"id": event.id, "type": event.event_type, "subject": event.subject} | event.get_json()
        )

    return app


@pytest.fixture
def blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def settings(azurite: Azurite, container: str) -> dict[str, str]:
    return {
        "DATA_CONTAINER": container,
        "DataStorage": azurite.connection_string,
        "DEVHOST_EVENT_GRID_SUBSCRIPTIONS": "blob_created=DataStorage:%DATA_CONTAINER%/incoming/",
    }


def test_one_event_per_blob_and_etag_across_restarts(
    make_host: HostFactory, azurite: Azurite, blobs: BlobServiceClient, unique_name: str
) -> None:
    container = blobs.create_container(unique_name)
    written = container.upload_blob("incoming/a b.csv", b"x,y\n1,2\n")
    container.upload_blob("elsewhere/b.csv", b"not under the subscription's prefix")
    seen: list[dict[str, object]] = []
    host = make_host(build_app(seen, set()), settings(azurite, unique_name))

    assert host.run_pending_once() == 1
    [event] = seen
    assert event["type"] == "Microsoft.Storage.BlobCreated"
    assert (
        event["subject"] == f"/blobServices/default/containers/{unique_name}/blobs/incoming/a b.csv"
    )
    assert event["url"] == f"{container.url}/incoming/a%20b.csv"
    assert (
        event["eTag"] == written.get_blob_properties().etag.strip('"')
        and event["contentLength"] == 8
    )
    assert host.run_pending_once() == 0
    host.stop()

    restarted = make_host(build_app(seen, set()), settings(azurite, unique_name))
    assert restarted.run_pending_once() == 0
    container.upload_blob("incoming/a b.csv", b"x,y\n3,4\n5,6\n", overwrite=True)  # new ETag
    assert restarted.run_pending_once() == 1
    assert seen[-1]["contentLength"] == 12 and seen[-1]["id"] != event["id"]


def test_a_delivery_that_keeps_failing_is_dead_lettered(
    make_host: HostFactory, azurite: Azurite, blobs: BlobServiceClient, unique_name: str
) -> None:
    container = blobs.create_container(unique_name)
    container.upload_blob("incoming/bad.csv", b"broken")
    seen: list[dict[str, object]] = []
    host = make_host(build_app(seen, {"bad.csv"}), settings(azurite, unique_name))

    attempts = [host.run_pending_once() for _ in range(6)]
    assert attempts == [1, 1, 1, 1, 1, 0]  # 5 attempts, then never again
    dead = blobs.get_container_client(EVENT_GRID_DEAD_LETTERS)
    [record] = [
        json.loads(dead.download_blob(b.name).readall())
        for b in dead.list_blobs(name_starts_with="blob_created/")
        if unique_name in json.loads(dead.download_blob(b.name).readall())["subject"]
    ]
    assert record["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert record["deliveryAttempts"] == 5
    assert "cannot take this one" in record["lastDeliveryOutcome"]

    # The CLI lists it with every other dead letter.
    from devhost.cli.dead_letters import list_dead_letters
    from orchestrator.bootstrap import bootstrap
    from orchestrator.settings import load_settings

    runtime = bootstrap(load_settings(AzureWebJobsStorage=azurite.connection_string))
    [listed] = [
        view for view in list_dead_letters(runtime, "event-grid") if unique_name in view.body
    ]
    assert (listed.origin, listed.reason) == ("eventgrid", "MaxDeliveryAttemptsExceeded")
    assert "cannot take this one" in listed.description and listed.replay_to is None


def test_an_event_grid_trigger_without_a_subscription_is_a_clear_error(
    azurite: Azurite, unique_name: str
) -> None:
    host = DevHost(
        build_app([], set()),
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "DataStorage": azurite.connection_string,
        },
        port=0,
        host_json=None,
        function_key="k" * 20,
        background_polling=False,
        azurite=False,
    )
    with pytest.raises(DevHostError, match="DEVHOST_EVENT_GRID_SUBSCRIPTIONS"):
        host.start()
    host.stop()
