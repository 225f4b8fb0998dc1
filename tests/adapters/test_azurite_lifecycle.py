"""The Azurite helper: one that is running is reused, one started here is stopped and cleaned."""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient

from adapters.azurite import DEV_KEY, Azurite, _answers, ensure_azurite, start_azurite

pytestmark = pytest.mark.azurite  # two of these start their own emulator


def test_a_running_azurite_is_reused_not_restarted(azurite: Azurite, unique_name: str) -> None:
    reused = ensure_azurite(azurite.connection_string)
    assert not reused.started_here  # nothing was started: stop() leaves it running
    assert reused.blob_endpoint == azurite.blob_endpoint
    client = BlobServiceClient.from_connection_string(reused.connection_string)
    client.create_container(unique_name)  # the same emulator the fixture started
    reused.stop()
    shared = BlobServiceClient.from_connection_string(azurite.connection_string)
    assert shared.get_container_client(unique_name).exists()


def test_settings_pointing_at_nothing_start_one_on_free_ports() -> None:
    nothing = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    emulator = ensure_azurite(nothing)
    try:
        assert emulator.started_here and ":9/" not in emulator.blob_endpoint
        assert _answers(emulator.blob_endpoint)
    finally:
        emulator.stop()


def test_stop_ends_the_process_and_removes_its_temporary_location() -> None:
    emulator = start_azurite()
    process, location = emulator.process, emulator.location
    assert process is not None and location is not None and location.exists()
    endpoints = (emulator.blob_endpoint, emulator.queue_endpoint, emulator.table_endpoint)
    assert all(_answers(endpoint) for endpoint in endpoints)
    emulator.stop()
    assert process.poll() is not None
    assert not location.exists()
    assert not any(_answers(endpoint) for endpoint in endpoints)
    emulator.stop()  # twice: harmless
