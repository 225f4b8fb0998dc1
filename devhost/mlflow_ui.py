"""An MLflow UI beside the host, on the local tracking store (a subprocess, 127.0.0.1)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORE = "sqlite:///.local/mlflow.db"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    os.setsid()  # its own process group, so stop() ends the server's workers too
    with contextlib.suppress(Exception):  # Linux: SIGTERM when devhost exits, however it exits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class MlflowUi:
    url: str
    process: subprocess.Popen[bytes] | None

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


def start_mlflow_ui(tracking_uri: str | None, log_file: Path) -> MlflowUi | None:
    """Start `mlflow ui` on a free port; None when the store is remote (its own UI)."""
    store = tracking_uri or DEFAULT_STORE
    if store.startswith(("http://", "https://")):
        return MlflowUi(url=store, process=None)
    if store.startswith(("azureml://", "databricks")):
        return None
    if store.startswith("sqlite:///"):
        Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", store,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    return MlflowUi(url=f"http://127.0.0.1:{port}", process=process)
