"""The Azure Functions app (Python v2 programming model).

Registers the blueprints in triggers/. Imports nothing heavy: azure-ai-ml, mlflow,
scikit-learn, pandas and scipy are loaded only inside the code paths that use them, and the
runtime (clients, policies) is built on first use, so the host indexes the app quickly.
Under a Functions host the settings are checked here, so a bad one fails the app at start,
and so is each policy's data container (a policy the app would never feed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import azure.functions as func

from triggers import dashboard, data, health, http_api, maintenance, messages


class UnwatchedPolicy(ValueError):
    """A policy names a data container the app does not watch: the file, the field, why."""


def check_policy_containers(environ: Mapping[str, str]) -> None:
    """Refuse a policy whose `data.container` is not DATA_CONTAINER, the one container whose
    new blobs the app takes (its data would never start anything), naming the file and the
    field. Only that field, read with PyYAML (~40 ms; no pydantic at import): the first
    invocation parses every policy in full and applies the same rule
    (orchestrator/policy_files.py), and a file this cannot read is left to that parse."""
    watched = environ.get("DATA_CONTAINER")
    if not watched:
        return
    import yaml

    from orchestrator.settings import APP_ROOT

    for path in sorted(Path(environ.get("POLICY_DIR") or APP_ROOT / "policies").glob("*.y*ml")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            continue
        section = document.get("data") if isinstance(document, dict) else None
        container = section.get("container") if isinstance(section, dict) else None
        if isinstance(container, str) and container != watched:
            raise UnwatchedPolicy(
                f"{path}: data.container: {container!r} is not watched: new blobs are taken "
                f"from DATA_CONTAINER={watched!r}; land the data there (under data.prefix) or "
                "set DATA_CONTAINER"
            )


if os.environ.get("FUNCTIONS_WORKER_RUNTIME"):
    # Under a Functions host (Azure, func start, devhost): a missing or malformed setting
    # stops the app here, as the host indexes it, naming the setting, instead of failing
    # every invocation. check_environment() applies the rules the Settings model is built
    # from, in plain Python: no pydantic at import (it would double the cold start). The
    # model itself is built by the first invocation, which needs pydantic anyway.
    from orchestrator.settings import check_environment

    check_environment()
    check_policy_containers(os.environ)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (health.bp, http_api.bp, dashboard.bp, data.bp, messages.bp, maintenance.bp):
    app.register_functions(blueprint)
