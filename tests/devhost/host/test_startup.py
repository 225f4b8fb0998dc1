"""Startup checks (as strict as the real host), settings, route templates, retry policies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import azure.functions as func
import pytest

from adapters.azurite import Azurite
from devhost.host.connections import HOST_STORAGE, local_queue_name
from devhost.host.discovery import discover, load_app
from devhost.host.http_server import RouteTemplate
from devhost.host.keys import resolve_function_key
from devhost.host.settings import DevHostError, HostConfig
from tests.devhost.host.conftest import HostFactory, queue_client, send


def test_binding_name_must_match_a_parameter() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="work", connection="AzureWebJobsStorage")
    def worker(message: func.QueueMessage) -> None: ...

    with pytest.raises(DevHostError, match=r"'worker'.*\['msg'\] match no parameter"):
        discover(app, {})


def test_unbound_parameter_is_an_error() -> None:
    app = func.FunctionApp()

    @app.route(route="x")
    def handler(req: func.HttpRequest, extra: str) -> func.HttpResponse: ...

    with pytest.raises(DevHostError, match=r"\['extra'\] of handler have no binding"):
        discover(app, {})


def test_unresolved_setting_names_it() -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="%MISSING_CONTAINER%/{name}", connection="X")
    def landed(blob: func.InputStream) -> None: ...

    with pytest.raises(DevHostError, match=r"'MISSING_CONTAINER'.*is not set"):
        discover(app, {})
    [spec] = discover(app, {"MISSING_CONTAINER": "data"})
    assert spec.trigger["path"] == "data/{name}"


@pytest.mark.azurite
def test_start_fails_clearly_and_restores_the_environment(make_host: HostFactory) -> None:
    app = func.FunctionApp()

    @app.service_bus_queue_trigger(arg_name="m", queue_name="%NOPE%", connection="SB")
    def handler(m: func.ServiceBusMessage) -> None: ...

    before = os.environ.get(HOST_STORAGE)
    with pytest.raises(DevHostError, match="'NOPE'"):
        make_host(app)
    assert os.environ.get(HOST_STORAGE) == before


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("models/{model}", "/models/churn", {"model": "churn"}),
        ("models/{model}", "/MODELS/churn/", {"model": "churn"}),
        ("models/{model}", "/models/churn/extra", None),
        ("promotions/{id}/rollback", "/promotions/p1/rollback", {"id": "p1"}),
        ("items/{id:int}", "/items/12", {"id": "12"}),
        ("items/{id:int}", "/items/abc", None),
        ("files/{*path}", "/files/a/b.csv", {"path": "a/b.csv"}),
        ("reports/{name?}", "/reports", {}),
    ],
)
def test_route_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert RouteTemplate.compile(template).match(path) == expected


def test_literal_routes_take_precedence() -> None:
    literal = RouteTemplate.compile("models/latest")
    parameter = RouteTemplate.compile("models/{model}")
    assert literal.precedence < parameter.precedence


def test_function_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    key_file = tmp_path / "function-key"
    key, source = resolve_function_key(None, {}, key_file)
    assert "new" in source
    assert resolve_function_key(None, {}, key_file) == (key, str(key_file))
    assert resolve_function_key(None, {"DEVHOST_FUNCTION_KEY": "k"}, key_file)[0] == "k"


def test_host_json_settings(tmp_path: Path) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"extensions": {
        "http": {"routePrefix": ""}, "eventHubs": {"maxEventBatchSize": 2},
        "blobs": {"poisonBlobThreshold": 3},
    }}))  # fmt: skip
    config = HostConfig.load(host_json)
    assert (config.route_prefix, config.event_hub_max_batch_size) == ("", 2)
    assert config.blob_poison_threshold == 3


def test_local_queue_names() -> None:
    assert local_queue_name("Data_Ready.Events") == "data-ready-events"
    with pytest.raises(DevHostError):
        local_queue_name("x")


@pytest.mark.azurite
def test_retry_policy_and_context_for_event_hubs(
    make_host: HostFactory, azurite: Azurite, unique_name: str
) -> None:
    attempts: list[int] = []
    app = func.FunctionApp()

    @app.retry(strategy="fixed_delay", max_retry_count="2", delay_interval="00:00:05")
    @app.event_hub_message_trigger(arg_name="events", event_hub_name=unique_name,
                                   connection="EventHubConnection")  # fmt: skip
    async def flaky(events: list[func.EventHubEvent], context: func.Context) -> None:
        attempts.append(context.retry_context.retry_count)
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    host = make_host(app, retry_delay_scale=0.0)
    send(queue_client(azurite, unique_name), "event")
    assert host.run_pending_once() == 1
    assert attempts == [0, 1, 2]


def test_an_app_that_fails_to_import_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the real host: an app whose import raises (a bad setting, say) fails to index.
    (tmp_path / "broken_app.py").write_text(
        "raise ValueError('invalid settings: MAX_DELIVERIES: must be >= 1')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DevHostError, match="'broken_app' failed to load: invalid settings"):
        load_app("broken_app")
    with pytest.raises(DevHostError, match="no module 'no_such_app'"):
        load_app("no_such_app")
