"""Start, reuse and stop the pinned Azurite storage emulator (used by tests and devhost).

Azurite is started with `--disableTelemetry`, on ports the OS picks (port 0, read back from
its log), in a temporary folder, and it dies with the process that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Azurite's published development account; not a secret.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO_ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at (\S+)")


class AzuriteError(RuntimeError):
    pass


@dataclass
class Azurite:
    blob_endpoint: str
    queue_endpoint: str
    table_endpoint: str
    process: subprocess.Popen[str] | None = None
    location: Path | None = None
    _owns_location: bool = False
    _log: list[str] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};"
            f"TableEndpoint={self.table_endpoint};"
        )

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if self._owns_location and self.location is not None:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def azurite_binary() -> Path:
    binary = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise AzuriteError(
            f"Azurite is not installed at {binary}: run `npm ci` (or `make install`) first"
        )
    return binary


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the process that started it exits, so an
    # interrupted test run or devhost never leaves Azurite behind.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_azurite(
    location: Path | None = None,
    timeout: float = 30.0,
    ports: tuple[int, int, int] | None = None,
) -> Azurite:
    """Start the pinned Azurite on free ports (or these blob, queue and table `ports`) and wait
    until blob, queue and table answer; AzuriteError when it does not come up (a port taken)."""
    owns_location = location is None
    location = Path(location or tempfile.mkdtemp(prefix="azurite-"))
    location.mkdir(parents=True, exist_ok=True)
    blob_port, queue_port, table_port = ports or (0, 0, 0)
    command = [
        str(azurite_binary()),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--location", str(location),
        "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
        "--tableHost", "127.0.0.1", "--tablePort", str(table_port),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_die_with_parent,
    )
    endpoints: dict[str, str] = {}
    log: list[str] = []
    ready = threading.Event()

    def read_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line.rstrip())
            del log[:-200]
            match = _LISTENING.search(line)
            if match:
                endpoints[match[1].lower()] = match[2].rstrip("/") + f"/{DEV_ACCOUNT}"
                if len(endpoints) == 3:
                    ready.set()

    threading.Thread(target=read_output, name="azurite-log", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AzuriteError("Azurite did not start: " + " | ".join(log[-10:] or ["no output"]))
    azurite = Azurite(
        blob_endpoint=endpoints["blob"],
        queue_endpoint=endpoints["queue"],
        table_endpoint=endpoints["table"],
        process=process,
        location=location,
        _owns_location=owns_location,
        _log=log,
    )
    for endpoint in (azurite.blob_endpoint, azurite.queue_endpoint, azurite.table_endpoint):
        _wait_until_answers(endpoint, deadline)
    return azurite


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(endpoint, timeout=2)
    except urllib.error.HTTPError:
        return True  # any HTTP answer (400/403 for an unsigned request) means it is up
    except (urllib.error.URLError, OSError):
        return False
    return True


def _wait_until_answers(endpoint: str, deadline: float) -> None:
    while not _answers(endpoint):
        if time.monotonic() > deadline:
            raise AzuriteError(f"Azurite endpoint {endpoint} does not answer")
        time.sleep(0.1)


def parse_connection_string(connection_string: str) -> dict[str, str]:
    parts = (part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return {key.strip(): value.strip() for key, value in parts}


def running_azurite(connection_string: str) -> Azurite | None:
    """The Azurite a connection string points at, if it answers (to reuse, not restart it)."""
    parts = parse_connection_string(connection_string)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        host = "http://127.0.0.1"
        parts = {
            "BlobEndpoint": f"{host}:10000/{DEV_ACCOUNT}",
            "QueueEndpoint": f"{host}:10001/{DEV_ACCOUNT}",
            "TableEndpoint": f"{host}:10002/{DEV_ACCOUNT}",
        }
    try:
        endpoints = [parts["BlobEndpoint"], parts["QueueEndpoint"], parts["TableEndpoint"]]
    except KeyError:
        return None
    if not all(_answers(endpoint) for endpoint in endpoints):
        return None
    return Azurite(*endpoints)


def ensure_azurite(connection_string: str | None = None) -> Azurite:
    """Reuse the Azurite the settings point at when it is running; otherwise start one."""
    if connection_string:
        existing = running_azurite(connection_string)
        if existing is not None:
            return existing
    return start_azurite()


if __name__ == "__main__":  # `python -m adapters.azurite`: run one until Ctrl-C
    with start_azurite(Path(os.environ.get("AZURITE_LOCATION", tempfile.mkdtemp()))) as emulator:
        print(emulator.connection_string, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
