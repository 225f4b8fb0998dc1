"""The services devhost runs beside the app for this project: the checkout's own Azurite and
the local endpoint server. Every port is chosen by the settings or free, never a fixed default
that another project may hold (docs/devhost.md, "What happens at start").
"""

from __future__ import annotations

import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from adapters.azurite import Azurite, AzuriteError, running_azurite, start_azurite
from devhost.host.settings import DevHostError
from devhost.host.state_file import AzuriteRecord, EndpointRecord

if TYPE_CHECKING:
    from endpoint_server.server import LocalEndpointHandle

log = logging.getLogger("devhost")

ENDPOINT_URL_SETTING = "LOCAL_ENDPOINT_URL"
ENDPOINT_KEY_SETTING = "LOCAL_ENDPOINT_KEY"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


def checkout_azurite(
    recorded: AzuriteRecord | None, location: Path | None, *, may_still_run: bool
) -> Azurite:
    """This checkout's Azurite: the one its last devhost recorded, when that devhost did not
    stop it (`may_still_run`: it did not stop cleanly) and it still answers; else a new one
    with its data in `location` (a temporary folder when None), on the ports recorded last
    time when they are free (the data URIs the state holds name them), otherwise on free
    ports. Never whatever answers on 10000-10002: that may be another project's."""
    if recorded is None or location is None or recorded.location != str(location):
        return start_azurite(location)
    if may_still_run:
        existing = running_azurite(recorded.connection_string)
        if existing is not None:
            return existing
    ports = _ports(recorded)
    if all(_free(port) for port in ports):
        started = _start_on_ports(location, ports)
        if started is not None:
            return started
    log.warning(
        "Azurite's last ports %s are taken: it starts on free ones; data recorded before "
        "(URIs naming the old ports) will not be found at those URIs",
        ", ".join(map(str, ports)),
    )
    return start_azurite(location)


def _ports(recorded: AzuriteRecord) -> tuple[int, int, int]:
    def port(endpoint: str) -> int:
        return urlsplit(endpoint).port or 0

    return (
        port(recorded.blob_endpoint),
        port(recorded.queue_endpoint),
        port(recorded.table_endpoint),
    )


def _free(port: int) -> bool:
    if not port:
        return False
    with socket.socket() as probe:
        # As Node listens: connections of the last run in TIME_WAIT do not make it taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_on_ports(location: Path, ports: tuple[int, int, int]) -> Azurite | None:
    """The pinned Azurite on these ports; None when it does not come up (a port taken
    meanwhile)."""
    try:
        return start_azurite(location, ports=ports)
    except AzuriteError as exc:
        log.warning("Azurite did not start on %s: %s", ports, exc)
        return None


def azurite_record(azurite: Azurite) -> AzuriteRecord:
    return AzuriteRecord(
        connection_string=azurite.connection_string,
        blob_endpoint=azurite.blob_endpoint,
        queue_endpoint=azurite.queue_endpoint,
        table_endpoint=azurite.table_endpoint,
        location=str(azurite.location) if azurite.location else None,
        started_here=azurite.started_here,
    )


@dataclass
class EndpointServer:
    """The local endpoint the app deploys to; `handle` when devhost started it."""

    url: str
    key: str
    data_dir: Path
    handle: LocalEndpointHandle | None = None

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()
            self.handle = None

    def record(self) -> EndpointRecord:
        return EndpointRecord(
            url=self.url,
            key=self.key,
            started_here=self.handle is not None,
            data_dir=str(self.data_dir),
        )


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _chosen_port(url: str) -> int:
    """The port of a local LOCAL_ENDPOINT_URL (the user chose it); otherwise an error."""
    parts = urlsplit(url)
    if parts.hostname not in _LOCAL_HOSTS or not parts.port:
        raise DevHostError(
            f"{ENDPOINT_URL_SETTING}={url} does not answer, and devhost can only start the "
            "local endpoint on 127.0.0.1:<port>: start that server, or unset "
            f"{ENDPOINT_URL_SETTING} (devhost then starts one on a free port)"
        )
    return parts.port


def start_endpoint_server(environ: Mapping[str, str], local_dir: Path) -> EndpointServer:
    """`LOCAL_ENDPOINT_URL` when a server answers there (the user runs it); else the local
    endpoint server started here, on that URL's port when one is set, else a free one. Its
    key: `LOCAL_ENDPOINT_KEY`, else the key file the app also reads (`<local dir>/endpoint.key`,
    made on first use)."""
    from adapters.local_endpoint import KEY_FILE
    from endpoint_server.__main__ import key_from_file
    from endpoint_server.server import start_local_endpoint

    key = environ.get(ENDPOINT_KEY_SETTING) or key_from_file(local_dir / KEY_FILE)
    data_dir = Path(environ.get("LOCAL_ENDPOINT_DIR") or local_dir / "endpoint")
    configured = (environ.get(ENDPOINT_URL_SETTING) or "").rstrip("/")
    if configured and _health(configured):
        log.info("local endpoint already running at %s: used as it is", configured)
        return EndpointServer(url=configured, key=key, data_dir=data_dir)
    port = _chosen_port(configured) if configured else 0
    tracking_uri = environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{local_dir / 'mlflow.db'}"
    try:
        handle = start_local_endpoint(
            data_dir, tracking_uri, port, subprocess_mode=True, max_lifetime=None, key=key
        )
    except (RuntimeError, OSError) as exc:
        where = f"port {port}" if port else "a free port"
        raise DevHostError(f"the local endpoint server did not start on {where}: {exc}") from exc
    return EndpointServer(url=handle.url, key=key, data_dir=data_dir, handle=handle)
