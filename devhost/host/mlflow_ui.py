"""An MLflow UI beside the host, on the local tracking store (a subprocess, 127.0.0.1).

A UI that already answers where one is expected is reused rather than started again:
`MLFLOW_UI_URL` when it is set, else `mlflow ui`'s own default, http://127.0.0.1:5000.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("devhost")

DEFAULT_STORE = "sqlite:///.local/mlflow.db"
DEFAULT_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` listens unless told otherwise
UI_URL_SETTING = "MLFLOW_UI_URL"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
_PROBE_TIMEOUT = 2.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    os.setsid()  # its own process group, so stop() ends the server's workers too
    with contextlib.suppress(Exception):  # Linux: SIGTERM when devhost exits, however it exits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class MlflowUi:
    url: str
    process: subprocess.Popen[bytes] | None
    reused: bool = False  # one that was already running: never stopped by devhost

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT) as response:
            return bytes(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None  # refused, an HTTP error status, a malformed URL: not an MLflow UI


def answers_as_mlflow(url: str) -> bool:
    """MLflow's server answers `GET /health` with `OK`; any other server (e.g. macOS AirPlay,
    which also listens on 5000) does not count."""
    body = _get(f"{url}/health")
    return body is not None and body.strip() == b"OK"


def _store_fingerprint(store: str) -> int | None:
    """When the Default experiment (id 0) of a SQLite store was created: unique per database."""
    if not store.startswith("sqlite:///"):
        return None
    path = Path(store.removeprefix("sqlite:///"))
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT creation_time FROM experiments WHERE experiment_id = 0")
            found = row.fetchone()
    except sqlite3.Error:
        return None
    return int(found[0]) if found and found[0] is not None else None


def _server_fingerprint(url: str) -> int | None:
    body = _get(f"{url}/api/2.0/mlflow/experiments/get?experiment_id=0")
    try:
        return int(json.loads(body or b"")["experiment"]["creation_time"])
    except (ValueError, KeyError, TypeError):
        return None


def _reusable(url: str, store: str, configured: bool) -> bool:
    """A UI at `url` serves this store when both name the same Default experiment. When that
    cannot be told (not SQLite, no store yet), only a UI the settings name is trusted: one that
    merely answers on the default port may be another project's."""
    if not answers_as_mlflow(url):
        return False
    ours = _store_fingerprint(store)
    theirs = _server_fingerprint(url)
    if ours is not None and theirs is not None:
        if ours != theirs:
            log.warning("the MLflow UI at %s serves another store than %s; not reused", url, store)
        return ours == theirs
    return configured


def _port_for(url: str, configured: bool) -> int:
    """The configured URL's port when it is local and free (so the printed URL is the one
    asked for); otherwise any free port."""
    if configured:
        parts = urlsplit(url)
        if parts.hostname in _LOCAL_HOSTS and parts.port and _port_is_free(parts.port):
            return parts.port
        log.warning("%s=%s cannot be used for a new MLflow UI; using a free port",
                    UI_URL_SETTING, url)  # fmt: skip
    return _free_port()


def start_mlflow_ui(
    tracking_uri: str | None, log_file: Path, ui_url: str | None = None
) -> MlflowUi | None:
    """Reuse the MLflow UI at `ui_url` (or the default URL) when it serves this store, else
    start `mlflow ui`; None when the store is remote and has its own UI (azureml, databricks)."""
    store = tracking_uri or DEFAULT_STORE
    if store.startswith(("http://", "https://")):
        return MlflowUi(url=store, process=None, reused=True)
    if store.startswith(("azureml://", "databricks")):
        return None
    configured = bool(ui_url)
    expected = (ui_url or DEFAULT_UI_URL).rstrip("/")
    if _reusable(expected, store, configured):
        log.info("MLflow UI already running at %s: reused", expected)
        return MlflowUi(url=expected, process=None, reused=True)
    if store.startswith("sqlite:///"):
        Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    port = _port_for(expected, configured)
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--workers", "1",  # one person's UI: not mlflow's 4 server processes on a laptop
        "--backend-store-uri", store,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    return MlflowUi(url=f"http://127.0.0.1:{port}", process=process)
