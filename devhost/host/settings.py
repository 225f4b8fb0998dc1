"""App settings and host.json, read the way the Functions host reads them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PLACEHOLDER = re.compile(r"%([^%]+)%")


class DevHostError(RuntimeError):
    """The app cannot be hosted as it is; the message says what to fix."""


def load_local_settings(path: Path) -> dict[str, str]:
    """`Values` of local.settings.json (empty when the file is absent)."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DevHostError(f"{path} is not valid JSON: {exc}") from exc
    values = document.get("Values") or {}
    if not isinstance(values, dict):
        raise DevHostError(f"{path}: 'Values' must be an object of strings")
    return {str(key): str(value) for key, value in values.items()}


def local_http_port(path: Path) -> int | None:
    """`Host.LocalHttpPort` of local.settings.json (as `func start` reads it), if set."""
    if not path.exists():
        return None
    try:
        host = json.loads(path.read_text(encoding="utf-8")).get("Host") or {}
    except json.JSONDecodeError as exc:
        raise DevHostError(f"{path} is not valid JSON: {exc}") from exc
    port = host.get("LocalHttpPort") if isinstance(host, dict) else None
    if port is None:
        return None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise DevHostError(f"{path}: Host.LocalHttpPort must be a port number, not {port!r}")
    return port


def apply_settings(settings: Mapping[str, str]) -> None:
    """Export settings into the environment, as the host does with app settings.

    Like `func start`, a variable already set in the environment wins over the file.
    """
    for key, value in settings.items():
        os.environ.setdefault(key, value)


def resolve_placeholders(value: str, environ: Mapping[str, str], where: str) -> str:
    """Replace `%SETTING%` with the app setting's value; a missing one is a clear error."""

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in environ:
            raise DevHostError(
                f"{where}: app setting {name!r} (from %{name}%) is not set; add it to "
                "local.settings.json Values or the environment"
            )
        return environ[name]

    return _PLACEHOLDER.sub(replace, value)


@dataclass(frozen=True)
class HostConfig:
    """What devhost uses from host.json."""

    route_prefix: str = "api"
    event_hub_max_batch_size: int = 1000
    blob_poison_threshold: int = 5
    queue_max_dequeue_count: int = 5
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> HostConfig:
        if path is None or not path.exists():
            return cls()
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DevHostError(f"{path} is not valid JSON: {exc}") from exc
        extensions = document.get("extensions") or {}
        http = extensions.get("http") or {}
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            event_hub_max_batch_size=int(
                (extensions.get("eventHubs") or {}).get("maxEventBatchSize", 1000)
            ),
            blob_poison_threshold=int(
                (extensions.get("blobs") or {}).get("poisonBlobThreshold", 5)
            ),
            queue_max_dequeue_count=int((extensions.get("queues") or {}).get("maxDequeueCount", 5)),
            raw=document,
        )
