"""`python -m devhost`: run the Functions app locally, like `func start`, until Ctrl-C.

Beside the app it runs this checkout's Azurite and the local endpoint server, each on a port
that is chosen (a flag or a setting) or free, and records where everything is in
`<state dir>/devhost.json` (default `.local/`), where `python -m devhost.cli` finds it.
The app's policies are read first: a bad one (e.g. a `data.container` the app does not watch)
stops devhost before anything starts, naming the file and the field (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from devhost.host.dev_host import DevHost
from devhost.host.settings import DevHostError, load_local_settings, local_http_port
from devhost.host.state_file import state_path

log = logging.getLogger("devhost")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devhost", description="Run an Azure Functions app without Core Tools."
    )
    parser.add_argument("--app", default="function_app", help="module with the FunctionApp")
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP port on 127.0.0.1 (default: Host.LocalHttpPort of the "
                             "settings file, else a free port)")  # fmt: skip
    parser.add_argument("--settings", default="local.settings.json", help="settings file")
    parser.add_argument("--host-json", default="host.json", help="host.json to read")
    parser.add_argument("--no-azurite", action="store_true", help="never start Azurite")
    parser.add_argument("--no-mlflow-ui", action="store_true", help="do not start the MLflow UI")
    parser.add_argument("--no-local-endpoint", action="store_true",
                        help="do not start the local endpoint server")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where devhost.json, the function key and Azurite's data are kept "
                             "(default: RETRAIN_LOCAL_DIR, else .local)")  # fmt: skip
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--max-deliveries", type=int, default=None,
                        help="local queue deliveries before the poison queue")  # fmt: skip
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    return parser.parse_args(argv)


def settings_from_file(path: Path) -> dict[str, str]:
    """local.settings.json Values; like Core Tools, a variable already set in the
    environment wins over the file."""
    values = load_local_settings(path)
    if not values:
        log.info("%s not found: using the environment only", path)
    for key in [key for key in values if key in os.environ]:
        log.info("skipping %s from %s: it is set in the environment", key, path)
        del values[key]
    return values


def check_policies(environ: Mapping[str, str]) -> None:
    """Read every policy of POLICY_DIR as the app will (orchestrator/policy_files.py), so a bad
    one stops devhost at start instead of failing the app's first invocation: a field that
    does not parse, or a `data.container` other than DATA_CONTAINER (the one container whose
    new blobs the app takes: that model's data would never start anything)."""
    from domain.policy import PolicyError
    from orchestrator.policy_files import load_policies
    from orchestrator.settings import APP_ROOT

    folder = Path(environ.get("POLICY_DIR") or APP_ROOT / "policies")
    try:
        load_policies(folder, watched_container=environ.get("DATA_CONTAINER") or None)
    except PolicyError as exc:
        raise DevHostError(f"a policy is refused: {exc}") from exc


def state_dir(explicit: Path | None, settings: dict[str, str]) -> Path:
    """--state-dir, else RETRAIN_LOCAL_DIR (environment, then the file), else .local."""
    if explicit is not None:
        return explicit
    return Path(
        os.environ.get("RETRAIN_LOCAL_DIR") or settings.get("RETRAIN_LOCAL_DIR") or ".local"
    )


def banner(host: DevHost) -> list[str]:
    """Where everything is, for a person: printed once devhost serves."""
    lines = [f"devhost is serving {host.http_url} (Ctrl-C to stop)"]
    if host.function_key:
        lines.append(
            f"  function key    {host.function_key} (?code=... or x-functions-key; "
            f"from {host.function_key_source})"
        )
    if host.endpoint is not None:
        started = "" if host.endpoint.handle is not None else " (already running: used)"
        lines.append(f"  local endpoint  {host.endpoint.url}{started}")
    if host.mlflow_url:
        lines.append(f"  MLflow UI       {host.mlflow_url}")
    azurite = host.azurite
    if azurite is not None:
        where = f"data in {azurite.location}" if azurite.location else "already running"
        lines.append(
            f"  Azurite         blob {azurite.blob_endpoint}, queue {azurite.queue_endpoint}, "
            f"table {azurite.table_endpoint} ({where})"
        )
    if host.state_file is not None:
        lines.append(f"  state file      {host.state_file} (endpoint key, connection strings)")
        lines.append(
            "  the CLI         python -m devhost.cli status <model>   (reads the state file: "
            "nothing to copy)"
        )
    return lines


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    sys.path.insert(0, os.getcwd())
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    settings_file = Path(arguments.settings)
    try:
        settings = settings_from_file(settings_file)
        port = arguments.port
        if port is None:
            port = local_http_port(settings_file) or 0
        check_policies({**os.environ, **settings})  # the file's values: not in the environment
    except DevHostError as exc:
        log.error("%s", exc)
        return 2
    local = state_dir(arguments.state_dir, settings)
    host = DevHost(
        arguments.app,
        settings,
        port=port,
        host_json=arguments.host_json,
        key_file=local / "function-key",
        poll_interval=arguments.poll_interval,
        azurite=not arguments.no_azurite,
        mlflow_ui=not arguments.no_mlflow_ui,
        local_endpoint=not arguments.no_local_endpoint,
        max_deliveries=arguments.max_deliveries,
        state_dir=local,
        state_file=state_path(local),
        settings_file=settings_file if settings_file.exists() else None,
    )
    try:
        host.start()
        print("\n".join(banner(host)), flush=True)
        host.wait()
    except DevHostError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        host.stop()
    return 0
