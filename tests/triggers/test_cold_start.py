"""Cold start under a Functions host: the settings are checked as the host imports the app,
a bad one stops it naming the setting (devhost too: a clear error, exit 2), and the import
stays light: no pydantic (the Settings model is built by the first invocation), nothing
heavy. The check at start and the Settings model are derived from one declaration; the last
test holds them to agreeing. No timings here: benchmarks/bench_cold_start.py measures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from orchestrator import settings as settings_module
from orchestrator.settings import SettingsError, check_environment, load_settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
DECLARED = settings_module._declared()
SETTING_NAMES = [rule.name for _, rule in DECLARED.values()]
# What must not load when the host imports the app: the heavy SDKs and libraries, and the
# settings model's pydantic (its import and model build doubled the cold start).
NOT_AT_IMPORT = (
    "azure.ai.ml",
    "mlflow",
    "sklearn",
    "pandas",
    "scipy",
    "azure.storage.blob",
    "pydantic",
    "pydantic_settings",
)


def host_environment(**settings: str) -> dict[str, str]:
    """The environment a Functions host gives the worker: the sample app settings."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    return clean | SAMPLE | {"FUNCTIONS_WORKER_RUNTIME": "python"} | settings


def run_python(code: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


BAD_SETTINGS = [
    ({"MAX_DELIVERIES": "many"}, "MAX_DELIVERIES: must be an integer"),
    ({"DEPLOYMENT_POLL_SECONDS": "0"}, "DEPLOYMENT_POLL_SECONDS: must be > 0"),
    ({"STATE_CONTAINER": "x"}, "STATE_CONTAINER: must be at least 3 characters"),
    ({"RETRAIN_LOG_LEVEL": "verbose"}, "RETRAIN_LOG_LEVEL: must be one of"),
    ({"LOCAL_ENDPOINT_URL": "127.0.0.1:5080"}, "LOCAL_ENDPOINT_URL: must be an http(s) URL"),
    (
        {"ServiceBusConnection__fullyQualifiedNamespace": "sb://ns.servicebus.windows.net/"},
        "ServiceBusConnection__fullyQualifiedNamespace: must be a fully qualified namespace",
    ),
    ({"AzureWebJobsStorage": "hello"}, "AzureWebJobsStorage: is not a storage connection"),
    ({"AZUREML_WORKSPACE": "ws"}, "Azure ML is half configured: AZUREML_SUBSCRIPTION_ID"),
]


@pytest.mark.parametrize(("settings", "named"), BAD_SETTINGS)
def test_under_a_host_a_bad_setting_stops_the_import_naming_it(
    settings: dict[str, str], named: str
) -> None:
    result = run_python("import function_app", host_environment(**settings))
    assert result.returncode != 0
    assert f"SettingsError: invalid settings: {named}" in result.stderr


def test_under_a_host_a_missing_storage_setting_stops_the_import() -> None:
    environment = host_environment()
    del environment["AzureWebJobsStorage"]
    result = run_python("import function_app", environment)
    assert result.returncode != 0
    assert "SettingsError: invalid settings: AzureWebJobsStorage" in result.stderr


def test_devhost_reports_a_bad_setting_and_exits_2(tmp_path: Path) -> None:
    settings_file = tmp_path / "local.settings.json"
    values = SAMPLE | {"MAX_DELIVERIES": "0"}
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    environment = {k: v for k, v in os.environ.items() if k not in [*values, *SETTING_NAMES]}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devhost",
            "--settings",
            str(settings_file),
            "--port",
            "0",
            "--no-azurite",
            "--no-mlflow-ui",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "'function_app' failed to load: invalid settings: MAX_DELIVERIES" in result.stderr


def test_under_a_host_the_import_loads_nothing_heavy_and_no_pydantic() -> None:
    probe = (
        "import json, sys, function_app; "
        f"print(json.dumps([m for m in {NOT_AT_IMPORT!r} "
        "if any(k == m or k.startswith(m + '.') for k in sys.modules)]))"
    )
    result = run_python(probe, host_environment())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_under_a_host_the_first_invocation_builds_the_settings_model() -> None:
    # Good settings pass the check at import; the model is built (and the settings validated
    # again, by pydantic) when the runtime is first needed, not before.
    probe = (
        "import sys, function_app; from orchestrator.settings import load_settings; "
        "assert 'pydantic' not in sys.modules; "
        "print(load_settings().max_deliveries, type(load_settings()).__name__)"
    )
    result = run_python(probe, host_environment(MAX_DELIVERIES="7"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "Settings"]


# --- the check at start and the Settings model agree -----------------------------------------

# As pydantic reads them, or not: whitespace, signs, "5.0" for an int, underscores, exponents,
# inf and nan, the empty string, a non-ASCII digit.
NUMBERS = [
    *("5", " 5 ", "+5", "5.0", "5.", "5.5", "0", "-1", "1_000", "1__0", "1e3", "0x10"),
    *("inf", "-inf", "nan", ".5", "", " ", "many", "\u0665"),
]
TEXTS = [
    *("", "ab", "abc", "retrain-state", "hello", "a" * 25, "retrainstate", "Not_An-Account"),
    *("https://acct.blob.core.windows.net", "http://x", "acct.blob.core.windows.net"),
    *("ns.servicebus.windows.net", "sb://ns.servicebus.windows.net/", "ns"),
    *("UseDevelopmentStorage=true", "usedevelopmentstorage=TRUE", "AccountName=a;AccountKey=<key>"),
    "BlobEndpoint=http://127.0.0.1:10000/a",
]
PATHS = ["policies", "", "/tmp/x", "."]
# As pydantic reads a boolean, or not: its words in any case, digits, padding, the empty string.
BOOLEANS = [
    *("true", "false", "TRUE", "False", "1", "0", "yes", "No", "on", "OFF", "t", "f", "y", "n"),
    *(" true", "true ", "", "2", "1.0", "tru", "enabled", "\u0661", "\u0131"),
]


def candidates(kind: Any) -> list[str]:
    """Values to try for a setting of this type (a new type of setting needs its own)."""
    if get_origin(kind) is types.UnionType:  # X | None
        [kind] = [arg for arg in get_args(kind) if arg is not type(None)]
    if get_origin(kind) is Literal:
        return [*get_args(kind), "info", "", "VERBOSE"]
    if kind in (int, float):
        return NUMBERS
    if kind is str:
        return TEXTS
    if kind is Path:
        return PATHS
    if kind is bool:
        return BOOLEANS
    raise AssertionError(f"no candidate values for settings of type {kind!r}")


def environments() -> list[dict[str, str]]:
    local = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    azureml = {"AZUREML_WORKSPACE": "ws", "AZUREML_RESOURCE_GROUP": "rg"}
    cases = [
        *({}, local, SAMPLE, {"AzureWebJobsStorage__accountName": "retrainstate"}),
        {"AzureWebJobsStorage__blobServiceUri": "https://a.blob.core.windows.net"},
        local | azureml,
        local | azureml | {"AZUREML_SUBSCRIPTION_ID": "s"},
        local | {"MAX_DELIVERIES": "0", "RETRAIN_LOG_LEVEL": "x", "AZUREML_WORKSPACE": "w"},
    ]
    for kind, rule in DECLARED.values():
        cases += [local | {rule.name: value} for value in candidates(kind)]
    return cases


def problems(error: SettingsError | None) -> set[str] | None:
    """The settings an error names (a rule across settings: its whole message, which both
    take from one function); the wording of a single setting's problem may differ."""
    if error is None:
        return None
    listed = str(error).removeprefix("invalid settings: ").split("; ")
    named = (re.match(r"([A-Za-z0-9_]+): ", problem) for problem in listed)
    return {
        match.group(1) if match and match.group(1) in SETTING_NAMES else problem
        for match, problem in zip(named, listed, strict=True)
    }


def test_the_check_at_start_agrees_with_the_settings_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    disagreements = []
    for environment in environments():
        for name in SETTING_NAMES:
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        at_start = at_first_use = None
        try:
            check_environment()
        except SettingsError as exc:
            at_start = exc
        try:
            load_settings()
        except SettingsError as exc:
            at_first_use = exc
        if problems(at_start) != problems(at_first_use):
            disagreements.append((environment, str(at_start), str(at_first_use)))
    assert not disagreements
