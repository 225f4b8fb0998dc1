"""The Functions app as the host sees it: indexed functions, bindings, settings, cold start."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import function_app
from orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("azure.ai.ml", "mlflow", "sklearn", "pandas", "scipy")


@functools.cache
def indexed_functions() -> list:
    # get_functions() builds the index once; a second call in one process raises unless the
    # index is reset (devhost, run by the end-to-end test in the same process, indexes it too).
    function_app.app.functions_bindings = {}
    return function_app.app.get_functions()


def functions() -> dict[str, tuple[dict, object]]:
    indexed = {}
    for function in indexed_functions():
        indexed[function.get_function_name()] = (
            json.loads(function.get_function_json()),
            function.get_user_function(),
        )
    return indexed


def trigger(name: str) -> dict:
    bindings = functions()[name][0]["bindings"]
    return next(b for b in bindings if b["type"].endswith("Trigger"))


def test_every_function_is_indexed_with_its_trigger():
    kinds = {name: trigger(name)["type"] for name in functions()}
    assert kinds == {
        "health": "httpTrigger",
        "retrain": "httpTrigger",
        "model_status": "httpTrigger",
        "model_runs": "httpTrigger",
        "model_audit": "httpTrigger",
        "promotion_status": "httpTrigger",
        "rollback": "httpTrigger",
        "approval": "httpTrigger",
        "pause": "httpTrigger",
        "resume": "httpTrigger",
        "promote_now": "httpTrigger",
        "dashboard_page": "httpTrigger",
        "dashboard_asset": "httpTrigger",
        "dashboard_state": "httpTrigger",
        "dashboard_sign_in": "httpTrigger",
        "data_blob_created": "eventGridTrigger",
        "data_events": "eventHubTrigger",
        "orchestrator_queue": "serviceBusTrigger",
        "approvals_queue": "serviceBusTrigger",
        "outbox_sweeper": "timerTrigger",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("health", {"route": "health", "methods": ["GET"], "authLevel": "ANONYMOUS"}),
        ("retrain", {"route": "retrain", "methods": ["POST"]}),
        ("model_status", {"route": "models/{model}", "methods": ["GET"]}),
        ("model_runs", {"route": "models/{model}/runs", "methods": ["GET"]}),
        ("model_audit", {"route": "models/{model}/audit", "methods": ["GET"]}),
        ("promotion_status", {"route": "promotions/{promotion_id}", "methods": ["GET"]}),
        ("rollback", {"route": "promotions/{promotion_id}/rollback", "methods": ["POST"]}),
        ("approval", {"route": "promotions/{promotion_id}/approval", "methods": ["POST"]}),
        ("promote_now", {"route": "promotions/{promotion_id}/promote-now", "methods": ["POST"]}),
        ("dashboard_page", {"route": "dashboard", "methods": ["GET"]}),
        ("dashboard_state", {"route": "dashboard/state", "methods": ["GET"]}),
        ("dashboard_sign_in", {"route": "dashboard/sign-in", "methods": ["POST"]}),
        ("data_blob_created", {"name": "event"}),
        (
            "data_events",
            {
                "eventHubName": "%DATA_EVENTS_HUB%",
                "connection": "EventHubConnection",
                "cardinality": "MANY",
            },
        ),
        (
            "orchestrator_queue",
            {"queueName": "%ORCHESTRATOR_QUEUE%", "connection": "ServiceBusConnection"},
        ),
        (
            "approvals_queue",
            {"queueName": "%APPROVALS_QUEUE%", "connection": "ServiceBusConnection"},
        ),
        ("outbox_sweeper", {"schedule": "0 */5 * * * *"}),
    ],
)
def test_trigger_settings(name, expected):
    binding = trigger(name)
    assert {key: binding.get(key) for key in expected} == expected


def test_http_routes_need_a_key_except_health():
    for name in functions():
        binding = trigger(name)
        if binding["type"] != "httpTrigger":
            continue
        level = binding.get("authLevel")
        if name == "health":
            assert level == "ANONYMOUS"
        else:
            # No route-level level: the app's default applies, and that is FUNCTION.
            assert level in (None, "FUNCTION"), name
    assert function_app.app.auth_level.name == "FUNCTION"


def test_every_binding_name_is_a_parameter_of_its_function():
    # A mismatch makes the real host drop the whole app while everything else looks fine.
    for name, (document, user_function) in functions().items():
        parameters = set(inspect.signature(user_function).parameters)
        for binding in document["bindings"]:
            if binding["name"] != "$return":
                assert binding["name"] in parameters, f"{name}: {binding['name']}"


def test_event_hub_trigger_retries_before_the_checkpoint_moves():
    [function] = [f for f in indexed_functions() if f.get_function_name() == "data_events"]
    policy = function.get_setting("retry_policy").get_dict_repr()
    assert policy["strategy"] == "exponential_backoff"
    # Unlimited: the function raises only when a dead letter cannot be written (every event is
    # handled or dead-lettered inside it), so the batch waits rather than being skipped.
    assert int(policy["max_retry_count"]) == -1


def test_every_app_setting_is_in_the_sample_settings():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    local, azure = set(sample["Values"]), set(sample["AzureValues"]) | set(sample["OptionalValues"])
    placeholders = set()
    for document, _ in functions().values():
        placeholders |= set(re.findall(r"%([A-Za-z0-9_]+)%", json.dumps(document)))
    assert placeholders <= local and placeholders <= azure
    aliases = {
        str(field.validation_alias.choices[0])  # type: ignore[union-attr]
        for field in Settings.model_fields.values()
    }
    # Every setting the app reads is documented for Azure; local may leave Azure-only ones out.
    undocumented = aliases - local - azure
    assert not undocumented
    for connection in ("ServiceBusConnection", "EventHubConnection", "DataStorage"):
        assert f"{connection}__fullyQualifiedNamespace" in azure or (
            f"{connection}__blobServiceUri" in azure
        )


def test_host_json_is_what_the_extensions_read():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")
    service_bus = host["extensions"]["serviceBus"]
    assert {"maxConcurrentCalls", "autoCompleteMessages", "maxAutoLockRenewalDuration"} <= set(
        service_bus
    )
    event_hubs = host["extensions"]["eventHubs"]
    assert {"maxEventBatchSize", "batchCheckpointFrequency", "initialOffsetOptions"} <= set(
        event_hubs
    )


def test_import_loads_no_heavy_module():
    probe = (
        "import sys, function_app; "
        f"print([m for m in {HEAVY!r} "
        "if any(k == m or k.startswith(m + '.') for k in sys.modules)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def host_environment(**settings: str) -> dict[str, str]:
    """The environment a Functions host gives the worker: the app settings, and the runtime."""
    clean = {k: v for k, v in os.environ.items() if k not in ("MAX_DELIVERIES",)}
    return (
        clean
        | {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        }
        | settings
    )


def test_under_a_host_a_bad_setting_stops_the_app_at_import_naming_it():
    result = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=host_environment(MAX_DELIVERIES="many"),
    )
    assert result.returncode != 0
    assert "SettingsError: invalid settings: MAX_DELIVERIES" in result.stderr


def test_under_a_host_good_settings_still_load_no_heavy_module():
    probe = (
        "import sys, function_app; "
        f"print([m for m in {HEAVY!r} "
        "if any(k == m or k.startswith(m + '.') for k in sys.modules)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=host_environment(),
    )
    assert result.stdout.strip() == "[]"


def test_import_with_both_exporters_configured_loads_no_telemetry_sdk():
    # The exporters are installed on the first invocation (orchestrator/bootstrap.py), never
    # at import: the cold start does not pay for the SDK, the OTLP exporter or Azure Monitor.
    probe = (
        "import sys, function_app; "
        "print(sorted(m for m in sys.modules if m.startswith("
        "('opentelemetry.sdk', 'opentelemetry.exporter', 'azure.monitor'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=host_environment(
            APPLICATIONINSIGHTS_CONNECTION_STRING=(
                "InstrumentationKey=11111111-2222-3333-4444-555555555555;"
                "IngestionEndpoint=https://127.0.0.1:9/"
            ),
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        ),
    )
    assert result.stdout.strip() == "[]"
