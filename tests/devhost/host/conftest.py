"""Fixtures for devhost tests: hosts on free ports, against the session's Azurite."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from adapters.azurite import Azurite
from devhost.host.dev_host import DevHost

TEST_KEY = "test-function-key"
HostFactory = Callable[..., DevHost]


@pytest.fixture
def make_host(azurite: Azurite) -> Iterator[HostFactory]:
    """Build and start a DevHost for a FunctionApp; every host is stopped after the test."""
    hosts: list[DevHost] = []

    def make(app: func.FunctionApp, settings: dict[str, str] | None = None, **options: Any):
        options = {
            "port": 0,
            "host_json": None,
            "function_key": TEST_KEY,
            "background_polling": False,
            "azurite": False,
            "retry_base": timedelta(0),
            **options,
        }
        all_settings = {"AzureWebJobsStorage": azurite.connection_string, **(settings or {})}
        host = DevHost(app, all_settings, **options)
        hosts.append(host)
        return host.start()

    yield make
    for host in hosts:
        host.stop()


def queue_client(azurite: Azurite, name: str) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, name)


def send(queue: QueueClient, body: str) -> None:
    """As the Functions bindings and our adapters write queue messages: base64."""
    queue.send_message(base64.b64encode(body.encode()).decode())


def poll_until(host: DevHost, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Polling passes until `done()` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        host.run_pending_once()
