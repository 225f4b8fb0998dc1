"""Where the CLI finds its storage: settings you give win; else this checkout's running devhost
(its state file); else an error that says how to get one."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devhost.cli.commands import BadInput
from devhost.cli.local_devhost import use_running_devhost
from devhost.host.state_file import (
    RUNNING,
    STOPPED,
    AzuriteRecord,
    DevhostState,
    EndpointRecord,
    state_path,
    write_state,
)

AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;Account"
    "Key=a2V5;"
    "BlobEndpoint=http://127.0.0.1:41001/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:41002/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:41003/devstoreaccount1;"
)


@pytest.fixture
def app_url() -> Iterator[str]:
    """A live HTTP server standing for the devhost's (the state's app URL must answer)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def recorded(local: Path, app_url: str, *, status: str = RUNNING, pid: int | None = None,
             settings_file: Path | None = None) -> DevhostState:  # fmt: skip
    state = DevhostState(
        status=status,
        pid=os.getpid() if pid is None else pid,
        checkout=str(local.parent),
        app_url=app_url,
        settings_file=str(settings_file) if settings_file else None,
        azurite=AzuriteRecord(AZURITE, "b", "q", "t", str(local / "azurite"), True),
        endpoint=EndpointRecord("http://127.0.0.1:41010", key="k" * 32, started_here=True),
        app_settings={
            "AzureWebJobsStorage": AZURITE,
            "DataStorage": AZURITE,
            "LOCAL_ENDPOINT_URL": "http://127.0.0.1:41010",
        },
    )
    write_state(state_path(local), state)
    return state


def test_the_running_devhost_fills_in_what_development_storage_means(tmp_path, app_url):
    local = tmp_path / ".local"
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"POLICY_DIR": "mine", "DataStorage": "x"}}))
    state = recorded(local, app_url, settings_file=settings)
    environ = {"RETRAIN_LOCAL_DIR": str(local), "AzureWebJobsStorage": "UseDevelopmentStorage=true"}

    assert use_running_devhost(settings_given=False, environ=environ) == state

    assert environ["AzureWebJobsStorage"] == AZURITE
    assert environ["DataStorage"] == "x"  # the settings file named it: left as it is
    assert environ["POLICY_DIR"] == "mine"  # devhost's settings file, as --settings would
    assert environ["LOCAL_ENDPOINT_URL"] == "http://127.0.0.1:41010"
    assert environ["LOCAL_ENDPOINT_KEY"] == "k" * 32


def test_storage_you_name_wins_over_the_devhost(tmp_path, app_url):
    local = tmp_path / ".local"
    recorded(local, app_url)
    mine = AZURITE.replace("41001", "42001")
    identity = {"AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net"}
    for given in ({"AzureWebJobsStorage": mine}, identity):
        environ = {"RETRAIN_LOCAL_DIR": str(local), **given}
        assert use_running_devhost(settings_given=True, environ=environ) is None
        assert environ == {"RETRAIN_LOCAL_DIR": str(local), **given}


def test_without_a_running_devhost_the_error_says_how_to_get_one(tmp_path, app_url):
    local = tmp_path / ".local"
    environ = {"RETRAIN_LOCAL_DIR": str(local), "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    with pytest.raises(BadInput, match=r"no devhost running in this checkout .*no state file.*"
                                       r"`make devhost`.*AzureWebJobsStorage"):  # fmt: skip
        use_running_devhost(settings_given=False, environ=environ)

    recorded(local, app_url, pid=2**22 + 1)  # a process that is gone
    with pytest.raises(BadInput, match=r"its devhost \(pid 4194305\) is gone"):
        use_running_devhost(settings_given=False, environ=dict(environ))

    recorded(local, app_url, status=STOPPED)
    with pytest.raises(BadInput, match=r"its devhost \(pid \d+\) stopped"):
        use_running_devhost(settings_given=False, environ=dict(environ))

    recorded(local, "http://127.0.0.1:9/api")  # alive process, nothing answers there
    with pytest.raises(BadInput, match="does not answer"):
        use_running_devhost(settings_given=False, environ=dict(environ))
