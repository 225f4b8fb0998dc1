"""The MLflow UI beside devhost: one that already runs where it is expected is reused (and
left running); otherwise devhost starts `mlflow ui` and stops it with itself.

A tiny HTTP server on 127.0.0.1 stands in for a running UI, answering what MLflow's server
answers (`/health`, GetExperiment for the Default experiment of a real SQLite store).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devhost.host import mlflow_ui
from devhost.host.mlflow_ui import MlflowUi, answers_as_mlflow, start_mlflow_ui
from tests.devhost.host.conftest import HostFactory

Routes = dict[str, tuple[int, bytes]]
Serve = Callable[[Routes], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serve fixed answers on 127.0.0.1 (a free port); every server stops after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(routes: Routes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep the test output clean

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, name="fake-mlflow-ui", daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real MLflow SQLite store, and when its Default experiment was created."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking = SqlAlchemyStore(uri, str(folder / "artifacts"))
    created = int(tracking.get_experiment("0").creation_time)
    tracking.engine.dispose()
    yield uri, created


def mlflow_routes(default_experiment_created: int) -> Routes:
    """What an MLflow server answers on the two paths devhost asks."""
    experiment = {
        "experiment_id": "0",
        "name": "Default",
        "lifecycle_stage": "active",
        "creation_time": default_experiment_created,
    }
    return {
        "/health": (200, b"OK"),
        "/api/2.0/mlflow/experiments/get?experiment_id=0": (
            200,
            json.dumps({"experiment": experiment}).encode(),
        ),
    }


def stopped_at_once(ui: MlflowUi) -> MlflowUi:
    """A UI devhost started: end it now (its process group), so no test leaves one behind."""
    assert ui.process is not None
    ui.stop()
    assert ui.process.poll() is not None
    return ui


def test_a_configured_ui_that_answers_is_reused_and_left_running(
    serve: Serve, tmp_path: Path
) -> None:
    url = serve(mlflow_routes(1))
    log_file = tmp_path / "mlflow-ui.log"

    ui = start_mlflow_ui(f"sqlite:///{tmp_path / 'none-yet.db'}", log_file, f"{url}/")

    assert ui == MlflowUi(url=url, process=None, reused=True)
    assert not log_file.exists()  # nothing was started
    ui.stop()
    assert answers_as_mlflow(url)  # not devhost's to stop


def test_the_default_url_is_reused_when_it_serves_this_store(
    serve: Serve, store: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, created = store
    url = serve(mlflow_routes(created))
    monkeypatch.setattr(mlflow_ui, "DEFAULT_UI_URL", url)  # 5000 may be in use here

    ui = start_mlflow_ui(uri, tmp_path / "mlflow-ui.log")

    assert ui is not None and (ui.url, ui.process, ui.reused) == (url, None, True)


def test_a_ui_on_another_store_is_not_reused(
    serve: Serve,
    store: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri, created = store
    url = serve(mlflow_routes(created + 1))  # another database's Default experiment
    monkeypatch.setattr(mlflow_ui, "DEFAULT_UI_URL", url)

    with caplog.at_level(logging.WARNING, logger="devhost"):
        ui = start_mlflow_ui(uri, tmp_path / "mlflow-ui.log")

    assert ui is not None
    stopped_at_once(ui)
    assert not ui.reused and ui.url != url
    assert ui.process is not None and ui.process.args[-5:] == [
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        ui.url.rsplit(":", 1)[1],
    ]
    assert "serves another store" in caplog.text


def test_the_default_url_is_not_trusted_when_the_store_cannot_be_compared(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = serve(mlflow_routes(1))  # maybe another project's UI: this store does not exist yet
    monkeypatch.setattr(mlflow_ui, "DEFAULT_UI_URL", url)

    ui = start_mlflow_ui(f"sqlite:///{tmp_path / 'new.db'}", tmp_path / "mlflow-ui.log")

    assert ui is not None
    stopped_at_once(ui)
    assert ui.url != url


@pytest.mark.parametrize(
    "routes",
    [
        {"/health": (403, b"Forbidden")},  # macOS AirPlay also listens on 5000
        {"/health": (200, b"<html>some other app</html>")},
        {},
    ],
)
def test_only_an_mlflow_server_counts_as_an_mlflow_ui(serve: Serve, routes: Routes) -> None:
    assert not answers_as_mlflow(serve(routes))


def test_nothing_answers_at_a_configured_local_url_so_the_new_ui_listens_there(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    ui = start_mlflow_ui(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ui.log", url)

    assert ui is not None
    stopped_at_once(ui)
    assert ui.url == url and not ui.reused


@pytest.mark.azurite
def test_devhost_reuses_the_ui_in_its_settings_and_leaves_it_running(
    make_host: HostFactory, serve: Serve, tmp_path: Path
) -> None:
    url = serve(mlflow_routes(1))
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="ping")
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    settings = {"MLFLOW_UI_URL": url, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'x.db'}"}
    host = make_host(app, settings, mlflow_ui=True, state_dir=tmp_path)

    assert host.mlflow_url == url
    assert f"MLflow UI: {url} (already running)" in host.describe()
    host.stop()
    assert answers_as_mlflow(url)
