"""Where the CLI finds the storage and the rest: settings you give win, else the devhost
running in this checkout, else a clear error.

1. Explicit: `AzureWebJobsStorage` set (in the environment or `--settings`) to anything but
   `UseDevelopmentStorage=true`, or identity-based (`AzureWebJobsStorage__...`): used as given.
2. The state file of this checkout's running devhost (`<RETRAIN_LOCAL_DIR or .local>/
   devhost.json`, devhost/host/state_file.py): its settings file when `--settings` is not
   given, and the connection strings and endpoint URL devhost gave the app in place of
   `UseDevelopmentStorage=true` and unset ones.
3. Neither: BadInput naming both ways out, rather than a guess at Azurite's default ports
   (which may be another project's).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from devhost.cli.commands import BadInput
from devhost.host.state_file import STOPPED, DevhostState, is_running, read_state, state_path

STORAGE = "AzureWebJobsStorage"
_DEV_STORAGE = "usedevelopmentstorage=true"


def _development(value: str) -> bool:
    return _DEV_STORAGE in value.replace(" ", "").lower()


def explicit_storage(environ: MutableMapping[str, str]) -> bool:
    """The settings name a storage account themselves (not `UseDevelopmentStorage=true`)."""
    value = environ.get(STORAGE, "")
    if value and not _development(value):
        return True
    return any(name.startswith(f"{STORAGE}__") and environ[name] for name in environ)


def local_dir(environ: MutableMapping[str, str]) -> Path:
    """Where devhost keeps its state, as devhost itself decides it (devhost/host/main.py
    `state_dir`): RETRAIN_LOCAL_DIR of the environment, else of ./local.settings.json, else
    .local."""
    from devhost.host.settings import DevHostError, load_local_settings

    if environ.get("RETRAIN_LOCAL_DIR"):
        return Path(environ["RETRAIN_LOCAL_DIR"])
    try:
        settings = load_local_settings(Path("local.settings.json"))
    except DevHostError:
        settings = {}
    return Path(settings.get("RETRAIN_LOCAL_DIR") or ".local")


def use_running_devhost(
    settings_given: bool, environ: MutableMapping[str, str] | None = None
) -> DevhostState | None:
    """Fill the environment from this checkout's running devhost (see the module); the state
    used, or None when the settings name the storage themselves."""
    from devhost.host.settings import DevHostError, load_local_settings

    environ = os.environ if environ is None else environ
    path = state_path(local_dir(environ))
    state = read_state(path)
    running = is_running(state)
    if running and state is not None and not settings_given and state.settings_file:
        try:
            values = load_local_settings(Path(state.settings_file))
        except DevHostError as exc:
            raise BadInput(f"the settings devhost uses: {exc}") from exc
        for name, value in values.items():  # as with --settings: the environment wins
            environ.setdefault(name, value)
    if explicit_storage(environ):
        return None
    if not running or state is None:
        if state is None:
            why = "no state file"
        elif state.status == STOPPED:
            why = f"its devhost (pid {state.pid}) stopped"
        else:
            why = f"its devhost (pid {state.pid}) is gone or does not answer"
        raise BadInput(
            f"no devhost running in this checkout ({path}: {why}): start one with "
            f"`make devhost`, or set {STORAGE} to a storage connection string"
        )
    for name, value in state.app_settings.items():
        current = environ.get(name, "")
        if not current or _development(current):
            environ[name] = value
    if state.endpoint is not None and not environ.get("LOCAL_ENDPOINT_KEY"):
        environ["LOCAL_ENDPOINT_KEY"] = state.endpoint.key
    return state
