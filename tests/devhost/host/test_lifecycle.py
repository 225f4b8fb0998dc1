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
from collections.abc import Callable, Iterator
from pathlib import Path

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from adapters.azurite import Azurite
from tests.devhost.host.conftest import HostFactory, queue_client, send

pytestmark = pytest.mark.azurite
REPO_ROOT = Path(__file__).resolve().parents[3]


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


class Output:
    """A child's output, read in a thread so its pipe never fills."""

    def __init__(self, lines: list[str], rest: Iterator[str]) -> None:
        self._lines = lines
        self._reader = threading.Thread(target=lambda: lines.extend(rest), daemon=True)
        self._reader.start()

    def text(self) -> str:
        """All of it, once the child has exited (its end of the pipe is closed)."""
        self._reader.join(timeout=20)
        return "".join(self._lines)


def start_cli(
    azurite: Azurite, queue: str, tmp_path: Path
) -> tuple[subprocess.Popen[str], str, Output]:
    """`python -m devhost` on the sample app: the process, its URL and its output."""
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"SAMPLE_QUEUE": queue}}))
    environment = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "DEVHOST_FUNCTION_KEY": "cli-key",
    }
    command = [
        sys.executable, "-m", "devhost", "--app", "tests.devhost.host.sample_app", "--port", "0",
        "--settings", str(settings), "--no-mlflow-ui", "--poll-interval", "0.1",
        "--no-local-endpoint", "--state-dir", str(tmp_path / ".local"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and Python
        # then keeps ignoring it: give the child the default, as a terminal's Ctrl-C finds it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    url = None
    for line in process.stdout:
        output.append(line)
        found = re.search(r"serving (http://127\.0\.0\.1:\d+/api)", line)
        if found:
            url = found[1]
            break
    if url is None:
        process.kill()
        process.wait(timeout=20)
        raise AssertionError("devhost did not report its URL: " + "".join(output[-20:]))
    return process, url, Output(output, process.stdout)


def stop_with(process: subprocess.Popen[str], signum: signal.Signals) -> int:
    """Send `signum` and wait for the exit code; a child that ignores it is killed (and the
    test fails) rather than left running."""
    process.send_signal(signum)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)
        raise AssertionError(f"devhost did not stop on {signum.name}") from None


def test_cli_serves_polls_and_stops_on_sigterm(
    azurite: Azurite, unique_name: str, tmp_path: Path
) -> None:
    process, url, _ = start_cli(azurite, unique_name, tmp_path)
    try:
        assert httpx.get(f"{url}/hello/ada").status_code == 401
        response = httpx.get(f"{url}/hello/ada", headers={"x-functions-key": "cli-key"})
        assert response.text == "hello ada"

        send(queue_client(azurite, unique_name), "abc")
        done = queue_client(azurite, f"{unique_name}-done")
        wait_for(lambda: _exists(done) and bool(done.peek_messages()))
        assert [m.content for m in done.peek_messages()] == ["Y2Jh"]  # base64("cba")
    finally:
        assert stop_with(process, signal.SIGTERM) == 0


def test_cli_stops_cleanly_on_ctrl_c(azurite: Azurite, unique_name: str, tmp_path: Path) -> None:
    process, url, output = start_cli(azurite, unique_name, tmp_path)
    try:
        response = httpx.get(f"{url}/hello/bo", headers={"x-functions-key": "cli-key"})
        assert response.text == "hello bo"
    finally:
        code = stop_with(process, signal.SIGINT)  # what Ctrl-C sends

    assert code == 0
    text = output.text()
    assert "stopping" in text
    assert "Traceback" not in text  # KeyboardInterrupt ends the wait, not a thread or the stop
    with pytest.raises(httpx.ConnectError):  # the server went with the process
        httpx.get(f"{url}/hello/bo", headers={"x-functions-key": "cli-key"})


def _exists(queue: QueueClient) -> bool:
    try:
        queue.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True
