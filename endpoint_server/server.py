"""Start and stop the local endpoint: in a background thread, or in a child process.

The server needs a key on every route but /health (endpoint_server/app.py): the caller's, or
one generated here (`LocalEndpointHandle.key`; a child process gets it in its environment,
`LOCAL_ENDPOINT_KEY`, never on its command line).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
KEY_ENVIRONMENT = "LOCAL_ENDPOINT_KEY"


def new_key() -> str:
    """A fresh endpoint key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass
class LocalEndpointHandle:
    """A running local endpoint. `stop()` is idempotent; also a context manager."""

    url: str
    data_dir: Path
    _stop: Any = field(repr=False)
    _stopped: bool = field(default=False, repr=False)
    key: str = field(default="", repr=False)  # what every route but /health needs

    def records_path(self, endpoint: str) -> Path:
        """`endpoint`'s request log (each endpoint has its own)."""
        from adapters.local_endpoint import endpoint_data_dir
        from endpoint_server.store import RECORDS_FILE

        return endpoint_data_dir(self.data_dir, endpoint) / RECORDS_FILE

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> LocalEndpointHandle:
        return self

    def __exit__(self, *args: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, Nagle + delayed ACK add ~40 ms a request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_forever(
    data_dir: Path | str,
    tracking_uri: str,
    port: int = 0,
    registry_uri: str | None = None,
    host: str = HOST,
    ready: Any = None,
    stop_event: threading.Event | None = None,
    max_lifetime: float | None = None,
    *,
    key: str,
) -> None:
    """Run the server in this thread until `stop_event` is set or `max_lifetime` passes.

    `ready(url)` is called once the server accepts connections; `key` is what every route
    but /health needs.
    """
    import uvicorn

    from endpoint_server.app import EndpointServerState, create_app

    state = EndpointServerState(data_dir, tracking_uri, registry_uri)
    sock = _bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        create_app(state, key), log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    deadline = time.monotonic() + max_lifetime if max_lifetime else None

    def watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if ready is not None and server.started:
            ready(url)
        while not server.should_exit:
            if stop_event is not None and stop_event.wait(0.1):
                break
            if stop_event is None:
                time.sleep(0.1)
            if deadline is not None and time.monotonic() > deadline:
                break
        server.should_exit = True

    watcher = threading.Thread(target=watch, name="endpoint-watch", daemon=True)
    watcher.start()
    try:
        server.run(sockets=[sock])
    finally:
        server.should_exit = True
        sock.close()
        state.close()


def start_local_endpoint(
    data_dir: Path | str,
    tracking_uri: str,
    port: int = 0,
    *,
    registry_uri: str | None = None,
    host: str = HOST,
    subprocess_mode: bool = False,
    max_lifetime: float | None = 3600.0,
    timeout: float = 30.0,
    key: str | None = None,
) -> LocalEndpointHandle:
    """Start the local endpoint on `host`:`port` (0: a free port) and return once it serves.

    In-process (default): uvicorn runs in a daemon thread. ``subprocess_mode=True`` runs
    ``python -m endpoint_server`` in a child process that also exits when this process dies.
    Either way the server stops by itself after `max_lifetime` seconds (None: never).
    `key` (default: a new one) is what its routes need; the handle carries it.
    """
    data_dir = Path(data_dir)
    key = key or new_key()
    if subprocess_mode:
        return _start_subprocess(
            data_dir, tracking_uri, port, registry_uri, host, max_lifetime, timeout, key
        )
    started = threading.Event()
    stop_event = threading.Event()
    box: dict[str, Any] = {}

    def ready(url: str) -> None:
        box["url"] = url
        started.set()

    def run() -> None:
        try:
            serve_forever(
                data_dir,
                tracking_uri,
                port,
                registry_uri,
                host,
                ready,
                stop_event,
                max_lifetime,
                key=key,
            )
        except BaseException as exc:
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="local-endpoint", daemon=True)
    thread.start()
    if not started.wait(timeout) or "error" in box:
        stop_event.set()
        raise RuntimeError(f"local endpoint did not start: {box.get('error')!r}")

    def stop() -> None:
        stop_event.set()
        thread.join(timeout=30)

    return LocalEndpointHandle(url=box["url"], data_dir=data_dir, _stop=stop, key=key)


def _start_subprocess(
    data_dir: Path,
    tracking_uri: str,
    port: int,
    registry_uri: str | None,
    host: str,
    max_lifetime: float | None,
    timeout: float,
    key: str,
) -> LocalEndpointHandle:
    command = [
        sys.executable, "-m", "endpoint_server",
        "--data-dir", str(data_dir),
        "--tracking-uri", tracking_uri,
        "--port", str(port),
        "--host", host,
        "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    if registry_uri:
        command += ["--registry-uri", registry_uri]
    if max_lifetime:
        command += ["--max-lifetime", str(max_lifetime)]
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        KEY_ENVIRONMENT: key,  # in the environment: a command line is visible to every user
    }
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    url: str | None = None
    box: dict[str, str] = {}

    def read_first_line() -> None:
        assert process.stdout is not None
        box["line"] = process.stdout.readline()

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(timeout)
    line = box.get("line", "")
    if line.startswith("listening on "):
        url = line.split("listening on ", 1)[1].strip()
    if url is None:
        process.kill()
        raise RuntimeError(f"local endpoint subprocess did not start (exit {process.poll()})")

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return LocalEndpointHandle(url=url, data_dir=data_dir, _stop=stop, key=key)
