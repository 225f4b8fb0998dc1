"""`python -m devhost`: run the Functions app locally, like `func start`, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from devhost.host.dev_host import DevHost
from devhost.host.settings import DevHostError, load_local_settings

log = logging.getLogger("devhost")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devhost", description="Run an Azure Functions app without Core Tools."
    )
    parser.add_argument("--app", default="function_app", help="module with the FunctionApp")
    parser.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1")
    parser.add_argument("--settings", default="local.settings.json", help="settings file")
    parser.add_argument("--host-json", default="host.json", help="host.json to read")
    parser.add_argument("--no-azurite", action="store_true", help="never start Azurite")
    parser.add_argument("--no-mlflow-ui", action="store_true", help="do not start the MLflow UI")
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
    host = DevHost(
        arguments.app,
        settings_from_file(Path(arguments.settings)),
        port=arguments.port,
        host_json=arguments.host_json,
        poll_interval=arguments.poll_interval,
        azurite=not arguments.no_azurite,
        mlflow_ui=not arguments.no_mlflow_ui,
        max_deliveries=arguments.max_deliveries,
    )
    try:
        host.start()
        print(f"devhost is serving {host.http_url} (Ctrl-C to stop)", flush=True)
        if host.mlflow_url:
            print(f"MLflow UI: {host.mlflow_url}", flush=True)
        if host.function_key:
            print(f"function key: {host.function_key} (?code=... or x-functions-key)", flush=True)
        host.wait()
    except DevHostError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        host.stop()
    return 0
