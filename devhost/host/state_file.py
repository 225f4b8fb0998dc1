"""`.local/devhost.json`: what a running devhost started and where, for the CLI and for the
next devhost of the same checkout.

devhost writes it once it serves (atomically, owner-only: it holds the local endpoint's key)
and marks it `stopped` when it stops; the record of its Azurite stays, so the next devhost of
this checkout can reuse that Azurite while it still answers (docs/devhost.md). Nothing here
imports more than the standard library: the CLI reads it before anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapters.processes import process_alive

STATE_FILE_NAME = "devhost.json"
RUNNING = "running"
STOPPED = "stopped"
_FORMAT = 1


@dataclass(frozen=True)
class AzuriteRecord:
    """The Azurite devhost uses: started by it (its data under `location`) or reused."""

    connection_string: str
    blob_endpoint: str
    queue_endpoint: str
    table_endpoint: str
    location: str | None = None
    started_here: bool = False


@dataclass(frozen=True)
class EndpointRecord:
    """The local endpoint server the app deploys to (`LOCAL_ENDPOINT_URL`)."""

    url: str
    key: str = field(repr=False)  # every route but /health needs it
    started_here: bool = False
    data_dir: str | None = None


@dataclass(frozen=True)
class DevhostState:
    """One devhost of one checkout: its addresses, and the settings it gave the app that a
    tool needs to reach the same things (connection strings, the endpoint's URL)."""

    status: str
    pid: int
    checkout: str
    app_url: str | None = None
    function_key_file: str | None = None
    settings_file: str | None = None
    azurite: AzuriteRecord | None = None
    endpoint: EndpointRecord | None = None
    mlflow_ui_url: str | None = None
    app_settings: dict[str, str] = field(default_factory=dict)
    format: int = _FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> DevhostState:
        values = dict(document)
        if values.get("azurite"):
            values["azurite"] = AzuriteRecord(**values["azurite"])
        if values.get("endpoint"):
            values["endpoint"] = EndpointRecord(**values["endpoint"])
        return cls(**values)

    def stopped(self) -> DevhostState:
        return DevhostState.from_json({**self.to_json(), "status": STOPPED})


def state_path(local_dir: Path | str) -> Path:
    return Path(local_dir) / STATE_FILE_NAME


def write_state(path: Path, state: DevhostState) -> None:
    """Replace the file in one step (a reader never sees half of it), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".devhost-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_state(path: Path) -> DevhostState | None:
    """The recorded state; None when there is none or it cannot be read (a stale format)."""
    try:
        return DevhostState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an answer all the same (a 401 or 404 from a live server)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_alive(state: DevhostState | None) -> bool:
    """The state is marked running and its process lives (serving, starting or stopping)."""
    return state is not None and state.status == RUNNING and process_alive(state.pid)


def is_running(state: DevhostState | None) -> bool:
    """The devhost the state names still runs: marked running, its process alive and its
    HTTP server answering (a process id alone may have been reused since)."""
    if state is None or not is_alive(state):
        return False
    if state.app_url is None:
        return True  # a host without HTTP: the process is all there is to check
    base = state.app_url.split("/", 3)[:3]
    return _answers("/".join(base) + "/")


def running_state(local_dir: Path | str) -> DevhostState | None:
    """The state of this checkout's running devhost, or None."""
    state = read_state(state_path(local_dir))
    return state if is_running(state) else None
