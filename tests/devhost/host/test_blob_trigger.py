"""Blob triggers: once per blob name + ETag, receipts across restarts, poison after retries."""

from __future__ import annotations

import base64
import json

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

from adapters.azurite import Azurite
from devhost.host.pollers import BLOB_POISON_QUEUE, HOSTS_CONTAINER
from tests.devhost.host.conftest import HostFactory, queue_client

pytestmark = pytest.mark.azurite


def build_app(seen: list[tuple[str, bytes, int]], failing: set[str]) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="%DATA_CONTAINER%/incoming/{name}",
                      connection="DataStorage")  # fmt: skip
    def data_landed(blob: func.InputStream) -> None:
        if blob.name.endswith(tuple(failing)):
            raise ValueError("cannot read this one")
        seen.append((blob.name, blob.read(), blob.length))

    return app


@pytest.fixture
def blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def settings(azurite: Azurite, container: str) -> dict[str, str]:
    return {"DATA_CONTAINER": container, "DataStorage": azurite.connection_string}


def test_fires_once_per_blob_and_not_after_restart(
    make_host: HostFactory, azurite: Azurite, blobs: BlobServiceClient, unique_name: str
) -> None:
    container = blobs.create_container(unique_name)
    container.upload_blob("incoming/a.csv", b"x,y\n1,2\n")
    container.upload_blob("elsewhere/b.csv", b"not watched")
    seen: list[tuple[str, bytes, int]] = []
    host = make_host(build_app(seen, set()), settings(azurite, unique_name))

    assert host.run_pending_once() == 1
    assert seen == [(f"{unique_name}/incoming/a.csv", b"x,y\n1,2\n", 8)]
    assert host.run_pending_once() == 0

    receipts = [
        b.name
        for b in blobs.get_container_client(HOSTS_CONTAINER).list_blobs(
            name_starts_with=f"blobreceipts/data_landed/{unique_name}/incoming/a.csv/"
        )
    ]
    assert len(receipts) == 1
    host.stop()

    restarted = make_host(build_app(seen, set()), settings(azurite, unique_name))
    assert restarted.run_pending_once() == 0
    assert len(seen) == 1

    container.upload_blob("incoming/a.csv", b"x,y\n3,4\n", overwrite=True)  # a new ETag
    assert restarted.run_pending_once() == 1
    assert seen[-1] == (f"{unique_name}/incoming/a.csv", b"x,y\n3,4\n", 8)
    assert restarted.run_pending_once() == 0


def test_failure_retries_then_poison(
    make_host: HostFactory, azurite: Azurite, blobs: BlobServiceClient, unique_name: str
) -> None:
    container = blobs.create_container(unique_name)
    container.upload_blob("incoming/bad.csv", b"broken")
    poison = queue_client(azurite, BLOB_POISON_QUEUE)
    seen: list[tuple[str, bytes, int]] = []
    host = make_host(build_app(seen, {"bad.csv"}), settings(azurite, unique_name))

    attempts = [host.run_pending_once() for _ in range(6)]
    assert attempts == [1, 1, 1, 1, 1, 0]  # 5 attempts (host default), then never again

    records = [json.loads(base64.b64decode(m.content)) for m in poison.peek_messages(32)]
    mine = [r for r in records if r["ContainerName"] == unique_name]
    assert len(mine) == 1
    assert mine[0]["BlobName"] == "incoming/bad.csv"
    assert mine[0]["FunctionId"] == "Host.Functions.data_landed"
