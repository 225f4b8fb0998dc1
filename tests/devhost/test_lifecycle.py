"""The host's lifecycle: background pollers, and `python -m devhost` end to end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from adapters.azurite import Azurite
from tests.devhost.conftest import HostFactory, queue_client, send

pytestmark = pytest.mark.azurite
REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_background_pollers_fire_and_stop_cleanly(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    received: list[bytes] = []
    app = func.FunctionApp()

    @app.service_bus_queue_trigger(arg_name="message", queue_name=unique_name,
                                   connection="ServiceBusConnection")  # fmt: skip
    def commands(message: func.ServiceBusMessage) -> None:
        received.append(message.get_body())

    host = make_host(app, background_polling=True, poll_interval=0.1)
    send(queue_client(azurite, unique_name), "go")
    wait_for(lambda: received == [b"go"])

    host.stop()  # returns once its threads have ended
    assert not [t for t in threading.enumerate() if t.name.startswith("devhost-")]


def test_cli_serves_polls_and_stops_on_sigterm(
    azurite: Azurite, unique_name: str, tmp_path: Path
) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"SAMPLE_QUEUE": unique_name}}))
    environment = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "DEVHOST_FUNCTION_KEY": "cli-key",
    }
    command = [
        sys.executable, "-m", "devhost", "--app", "tests.devhost.sample_app", "--port", "0",
        "--settings", str(settings), "--no-mlflow-ui", "--poll-interval", "0.1",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            found = re.search(r"serving (http://127\.0\.0\.1:\d+/api)", line)
            if found:
                url = found[1]
                break
        assert url, "devhost did not report its URL"
        threading.Thread(target=process.stdout.read, daemon=True).start()  # drain the rest

        assert httpx.get(f"{url}/hello/ada").status_code == 401
        response = httpx.get(f"{url}/hello/ada", headers={"x-functions-key": "cli-key"})
        assert response.text == "hello ada"

        send(queue_client(azurite, unique_name), "abc")
        done = queue_client(azurite, f"{unique_name}-done")
        wait_for(lambda: _exists(done) and bool(done.peek_messages()))
        assert [m.content for m in done.peek_messages()] == ["Y2Jh"]  # base64("cba")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def _exists(queue: QueueClient) -> bool:
    try:
        queue.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True
