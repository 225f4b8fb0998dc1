"""Two checkouts on one machine: each devhost gets its own Azurite and free ports, records them
in its checkout's .local/devhost.json, and the CLI finds everything there.

`python -m devhost` runs for real (a subprocess, the sample app, Azurite started by devhost);
the Azurite of the test session stands for another project's, already running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import azure.functions as func
import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from adapters.azurite import Azurite
from devhost.host.dev_host import DevHost
from devhost.host.state_file import RUNNING, STOPPED, read_state, state_path
from tests.harness import policy_yaml

pytestmark = pytest.mark.azurite  # devhost starts its own emulators here
REPO_ROOT = Path(__file__).resolve().parents[3]
# What a setting may already hold in the test process: the checkouts' own files decide here.
CLEARED = ("AzureWebJobsStorage", "DataStorage", "RETRAIN_LOCAL_DIR", "LOCAL_ENDPOINT_URL",
           "LOCAL_ENDPOINT_KEY", "MLFLOW_UI_URL", "POLICY_DIR", "DEVHOST_FUNCTION_KEY")  # fmt: skip
FIXED_PORTS = {10000, 10001, 10002, 5080, 5000, 7071}


def checkout(root: Path, name: str) -> Path:
    """A checkout's own files: settings as the sample's (UseDevelopmentStorage=true) and one
    policy."""
    folder = root / name
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "churn.yml").write_text(policy_yaml("churn"))
    local = folder / ".local"
    values = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "DataStorage": "UseDevelopmentStorage=true",
        "SAMPLE_QUEUE": f"sample-{name}",
        "DATA_CONTAINER": "training-data",
        "POLICY_DIR": str(folder / "policies"),
        "RETRAIN_LOCAL_DIR": str(local),
        "MLFLOW_TRACKING_URI": f"sqlite:///{local / 'mlflow.db'}",
    }
    (folder / "local.settings.json").write_text(json.dumps({"Values": values}))
    return folder


def environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in CLEARED}


def start_devhost(folder: Path, mlflow_ui: bool = False) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "devhost", "--app", "tests.devhost.host.sample_app",
        "--settings", str(folder / "local.settings.json"), "--poll-interval", "0.2",
        *([] if mlflow_ui else ["--no-mlflow-ui"]),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_until_recorded(process: subprocess.Popen[str], folder: Path, timeout: float = 90.0):
    path = state_path(folder / ".local")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        state = read_state(path)
        if state is not None and state.status == RUNNING and state.pid == process.pid:
            return state
        time.sleep(0.2)
    process.kill()
    output = process.communicate(timeout=20)[0]
    raise AssertionError(f"devhost did not record itself in {path}: {output[-3000:]}")


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=20)
        raise AssertionError("devhost did not stop on SIGTERM") from None


def ports(*urls: str) -> set[int]:
    return {urlsplit(url).port or 0 for url in urls}


def cli(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m devhost.cli` as a person runs it in that checkout: no connection string, no
    settings flag; RETRAIN_LOCAL_DIR only says which checkout (the cwd is the repository)."""
    return subprocess.run(
        [sys.executable, "-m", "devhost.cli", *arguments],
        cwd=REPO_ROOT, env={**environment(), "RETRAIN_LOCAL_DIR": str(folder / ".local")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def two_checkouts(tmp_path: Path) -> Iterator[tuple[Path, Path, list[subprocess.Popen[str]]]]:
    processes: list[subprocess.Popen[str]] = []
    yield checkout(tmp_path, "a"), checkout(tmp_path, "b"), processes
    for process in processes:
        stop(process)


def test_two_checkouts_get_their_own_azurite_and_ports_and_the_cli_finds_them(
    two_checkouts, azurite: Azurite, tmp_path: Path
) -> None:
    first, second, processes = two_checkouts
    # a with the MLflow UI (started, never waited for: its URL is known at once), b without.
    processes.extend([start_devhost(first, mlflow_ui=True), start_devhost(second)])
    a = wait_until_recorded(processes[0], first)
    b = wait_until_recorded(processes[1], second)

    assert a.azurite and b.azurite and a.endpoint and b.endpoint and a.app_url and b.app_url
    assert a.mlflow_ui_url and b.mlflow_ui_url is None
    used_a = ports(a.app_url, a.endpoint.url, a.azurite.blob_endpoint, a.azurite.queue_endpoint)
    used_a |= ports(a.mlflow_ui_url)  # not mlflow ui's default 5000: a free port
    used_b = ports(b.app_url, b.endpoint.url, b.azurite.blob_endpoint, b.azurite.queue_endpoint)
    assert not used_a & used_b  # nothing shared, nothing collides
    assert not (used_a | used_b) & FIXED_PORTS
    session = ports(azurite.blob_endpoint, azurite.queue_endpoint, azurite.table_endpoint)
    assert not (used_a | used_b) & session  # the Azurite already running is not reused
    assert a.azurite.started_here and a.azurite.location == str(first / ".local" / "azurite")
    assert b.azurite.location == str(second / ".local" / "azurite")
    for state in (a, b):
        assert httpx.get(f"{state.endpoint.url}/health").status_code == 200
        assert state.app_settings["AzureWebJobsStorage"] == state.azurite.connection_string
        assert state.app_settings["LOCAL_ENDPOINT_URL"] == state.endpoint.url
    assert oct(state_path(first / ".local").stat().st_mode & 0o777) == "0o600"

    # The CLI of checkout a talks to a's Azurite, found in a's state file.
    data = tmp_path / "batch-1.csv"
    data.write_text("a,label\n1,0\n")
    sent = cli(first, "send-data", "churn", str(data), "--json")
    assert sent.returncode == 0, sent.stderr
    [blob] = json.loads(sent.stdout)["uploaded"]
    assert blob["url"].startswith(a.azurite.blob_endpoint)
    in_a = BlobServiceClient.from_connection_string(a.azurite.connection_string)
    in_b = BlobServiceClient.from_connection_string(b.azurite.connection_string)
    assert in_a.get_blob_client("training-data", "churn/batch-1.csv").exists()
    assert not in_b.get_container_client("training-data").exists()
    status = cli(second, "status", "churn", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["model"] == "churn"

    # A second devhost in the same checkout is refused; the first one is left alone.
    again = subprocess.run(
        [sys.executable, "-m", "devhost", "--app", "tests.devhost.host.sample_app",
         "--settings", str(first / "local.settings.json"), "--no-mlflow-ui"],
        cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2
    assert "a devhost is starting or running in this checkout" in again.stdout + again.stderr
    assert read_state(state_path(first / ".local")) == a

    banner = stop(processes[0])
    assert read_state(state_path(first / ".local")).status == STOPPED  # type: ignore[union-attr]
    # The banner says where everything is, as the state file does.
    assert f"devhost is serving {a.app_url} (Ctrl-C to stop)" in banner
    assert f"  local endpoint  {a.endpoint.url}\n" in banner
    assert f"  MLflow UI       {a.mlflow_ui_url}\n" in banner
    assert f"  Azurite         blob {a.azurite.blob_endpoint}, " in banner
    assert f"  state file      {state_path(first / '.local')} " in banner
    assert "python -m devhost.cli status <model>" in banner
    gone = cli(first, "status", "churn")
    assert gone.returncode == 2
    assert "no devhost running in this checkout" in gone.stderr


def small_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="ping")
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    return app


def in_process_host(local: Path) -> DevHost:
    return DevHost(
        small_app(),
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true"},
        port=0,
        host_json=None,
        background_polling=False,
        state_dir=local,
        state_file=state_path(local),
    )


def test_a_restart_keeps_azurite_s_ports_and_data(tmp_path: Path) -> None:
    local = tmp_path / ".local"
    with in_process_host(local) as host:
        assert host.azurite is not None
        first = host.azurite.connection_string
        blobs = BlobServiceClient.from_connection_string(first)
        blobs.create_container("kept").upload_blob("x.csv", b"1")
    assert read_state(state_path(local)).status == STOPPED  # type: ignore[union-attr]

    with in_process_host(local) as host:
        assert host.azurite is not None and host.azurite.started_here
        # The same ports: URIs the state recorded (data waiting for a job) still resolve.
        assert host.azurite.connection_string == first
        again = BlobServiceClient.from_connection_string(first)
        assert again.get_blob_client("kept", "x.csv").download_blob().readall() == b"1"


def test_an_azurite_recorded_elsewhere_or_stopped_is_not_reused(
    tmp_path: Path, azurite: Azurite
) -> None:
    """The state file names the session's Azurite (another project's, still answering): with
    another data folder, or marked stopped (ours was stopped, so whatever answers now is not
    ours), it is left alone and devhost starts its own on free ports."""
    from devhost.host.local_services import azurite_record
    from devhost.host.state_file import DevhostState, write_state

    theirs = azurite_record(azurite)
    for status, location in ((RUNNING, str(tmp_path / "elsewhere")), (STOPPED, None)):
        local = tmp_path / f".local-{status}"
        location = location or str((local / "azurite").resolve())
        record = DevhostState(
            status=status,
            pid=2**22 + 1,  # no such process
            checkout=str(tmp_path),
            azurite=type(theirs)(**{**theirs.__dict__, "location": location}),
        )
        write_state(state_path(local), record)
        with in_process_host(local) as host:
            assert host.azurite is not None and host.azurite.started_here
            assert host.azurite.blob_endpoint != azurite.blob_endpoint
            assert host.azurite.location == (local / "azurite").resolve()


def test_a_policy_the_app_would_never_feed_stops_devhost_and_the_app_at_start(
    tmp_path: Path,
) -> None:
    """A policy whose data.container is not DATA_CONTAINER (the one container whose new blobs
    the app takes) loads, but its data would never start anything: devhost refuses it before
    anything starts (exit 2, the file and the field), and so does the app itself as any
    Functions host imports it, without pydantic (the cold start)."""
    folder = checkout(tmp_path, "a")
    policy = folder / "policies" / "churn.yml"
    policy.write_text(policy_yaml("churn").replace("container: training-data", "container: other"))
    said = f"{policy}: data.container: 'other' is not watched: new blobs are taken from "

    refused = subprocess.run(
        [sys.executable, "-m", "devhost", "--settings", str(folder / "local.settings.json"),
         "--no-mlflow-ui"],
        cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert said + "DATA_CONTAINER='training-data'" in refused.stdout + refused.stderr
    assert not (folder / ".local" / "azurite").exists()  # nothing was started
    assert read_state(state_path(folder / ".local")) is None

    host = environment() | {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "DATA_CONTAINER": "training-data",
        "POLICY_DIR": str(folder / "policies"),
    }
    probe = "import sys, function_app; print('pydantic' in sys.modules)"
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=host, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert imported.returncode != 0
    assert f"UnwatchedPolicy: {said}" in imported.stderr
    policy.write_text(policy_yaml("churn"))
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=host, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "False"  # checked without the policy model
