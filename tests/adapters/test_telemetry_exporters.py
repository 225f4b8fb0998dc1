"""The exporters the bootstrap installs (adapters/telemetry_exporters.py), each in a fresh
process: OpenTelemetry's providers are set once per process, and these tests must neither
inherit nor leave one behind.

- Neither setting: nothing installed, not even the SDK imported.
- `OTEL_EXPORTER_OTLP_ENDPOINT`: spans and metrics really arrive at a local OTLP/HTTP
  receiver (a tiny http.server on a free 127.0.0.1 port), decoded with the OTLP protobufs.
- `APPLICATIONINSIGHTS_CONNECTION_STRING`: Azure Monitor with the app's credential, to an
  ingestion endpoint where nothing listens (127.0.0.1:9): spans end at once, the export fails
  in the background and is kept for a retry, nothing leaves the machine (no statsbeat, no
  IMDS: the credential is a static one, the VM resource detector is off).
- A broken setting is logged and the app goes on without telemetry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ("OTEL_", "APPLICATIONINSIGHTS_")
# A well-formed connection string to an endpoint nothing listens on (port 9: discard).
UNREACHABLE = (
    "InstrumentationKey=11111111-2222-3333-4444-555555555555;"
    "IngestionEndpoint=https://127.0.0.1:9/;LiveEndpoint=https://127.0.0.1:9/"
)
LOADED = (
    "sorted({m.split('.')[0] + '.' + m.split('.')[1] for m in sys.modules "
    "if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', 'azure.monitor'))})"
)


def run(probe: str, tmp_path: Path, **settings: str) -> dict[str, Any]:
    """Run `probe` (Python) in a fresh interpreter whose environment has only these
    telemetry settings; it prints one JSON line last, returned with its stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS)}
    env = clean | {"TMPDIR": str(tmp_path)} | settings
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]) | {"stderr": result.stderr}


def test_without_either_setting_nothing_is_installed(tmp_path: Path) -> None:
    probe = f"""
import json, sys
from adapters.telemetry_exporters import configure
from opentelemetry import metrics, trace
from orchestrator import telemetry
chosen = configure()
with telemetry.span("handle GateCheck") as span:
    recording = span.is_recording()
print(json.dumps({{
    "chosen": chosen,
    "tracer": type(trace.get_tracer_provider()).__name__,
    "meter": type(metrics.get_meter_provider()).__name__,
    "recording": recording,
    "loaded": {LOADED},
}}))
"""
    found = run(probe, tmp_path)
    assert found["chosen"] is None
    assert (found["tracer"], found["meter"]) == ("ProxyTracerProvider", "_ProxyMeterProvider")
    assert found["recording"] is False  # the API alone: a no-op
    assert found["loaded"] == []


# --------------------------------------------------------------------------- OTLP


class Receiver:
    """An OTLP/HTTP receiver: keeps each POST (path, content type, body), answers 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, kind, body in self.posts if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


OTLP_PROBE = """
import json, sys
from adapters.telemetry_exporters import configure
from opentelemetry import metrics, trace
from orchestrator import telemetry
chosen = configure({environ})
again = configure()
with telemetry.span("handle GateCheck", **{{"retrain.model": "otlp-model"}}):
    with telemetry.span("decide promotion", **{{"retrain.verdict": "fail"}}):
        pass
telemetry.count("promotions", model="otlp-model", outcome="rolled_back")
flushed = trace.get_tracer_provider().force_flush(10_000)
metrics.get_meter_provider().force_flush(10_000)
print(json.dumps({{"chosen": chosen, "again": again, "flushed": flushed}}))
"""


@pytest.mark.parametrize("given", ["environment", "mapping"])
def test_otlp_spans_and_metrics_arrive_at_a_local_receiver(
    given: str, receiver: Receiver, tmp_path: Path
) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    if given == "environment":  # as in production: the process's environment
        probe, settings = (
            OTLP_PROBE.format(environ=""),
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
        )
    else:  # a mapping given to configure: honoured, although os.environ has no endpoint
        mapping = repr({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url + "/"})
        probe, settings = OTLP_PROBE.format(environ=mapping), {}
    found = run(probe, tmp_path, **settings)
    assert (found["chosen"], found["again"], found["flushed"]) == ("otlp", None, True)

    spans = {}
    for body in receiver.bodies("/v1/traces"):
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            assert service["service.name"] == "retrain-orchestrator"
            for scope in resource.scope_spans:
                for span in scope.spans:
                    spans[span.name] = span
    assert set(spans) == {"handle GateCheck", "decide promotion"}
    handle, decide = spans["handle GateCheck"], spans["decide promotion"]
    assert decide.parent_span_id == handle.span_id and decide.trace_id == handle.trace_id
    assert {a.key: a.value.string_value for a in handle.attributes} == {
        "retrain.model": "otlp-model"
    }
    assert {path for path, _, _ in receiver.posts} == {"/v1/traces", "/v1/metrics"}
    assert all(kind == "application/x-protobuf" for _, kind, _ in receiver.posts)

    counted = []
    for body in receiver.bodies("/v1/metrics"):
        request = ExportMetricsServiceRequest.FromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.sum.data_points:
                        labels = {a.key: a.value.string_value for a in point.attributes}
                        counted.append((metric.name, labels, point.as_int))
    assert (
        "retrain.promotions",
        {"model": "otlp-model", "outcome": "rolled_back"},
        1,
    ) in counted


def test_an_otlp_receiver_that_is_down_does_not_block_the_app(tmp_path: Path) -> None:
    probe = """
import json, time
from adapters.telemetry_exporters import configure
from orchestrator import telemetry
chosen = configure()
start = time.monotonic()
for index in range(500):
    with telemetry.span("handle GateCheck", **{"retrain.model": "down"}):
        pass
print(json.dumps({"chosen": chosen, "seconds": time.monotonic() - start}))
"""
    found = run(
        probe,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    assert found["chosen"] == "otlp"
    assert found["seconds"] < 2.0  # the spans are exported in the background


# --------------------------------------------------------------------------- Azure Monitor


AZURE_MONITOR_PROBE = """
import json, sys, time, logging
from pathlib import Path
import tempfile
from azure.core.credentials import AccessToken

class StaticCredential:
    # Stands where the managed identity stands: a token for any scope, never the network.
    scopes = []
    def get_token(self, *scopes, **options):
        self.scopes.extend(scopes)
        return AccessToken("token", int(time.time()) + 3600)

import adapters.azure_credential
adapters.azure_credential._credential = StaticCredential()
from adapters.telemetry_exporters import configure
from opentelemetry import metrics, trace
from orchestrator import telemetry

chosen = configure()
start = time.monotonic()
with telemetry.span("handle GateCheck", **{"retrain.model": "am-model"}):
    for index in range(200):  # one trace (the distro samples traces, a few per second)
        with telemetry.span(f"effect {index}", **{"retrain.model": "am-model"}):
            pass
ended = time.monotonic() - start
start = time.monotonic()
flushed = trace.get_tracer_provider().force_flush(20_000)
flush_seconds = time.monotonic() - start
from azure.core.settings import settings
stored = "".join(
    path.read_text(errors="replace")
    for path in Path(tempfile.gettempdir()).rglob("*")
    if path.is_file() and "AzureMonitor" in str(path)
)
print(json.dumps({
    "chosen": chosen,
    "tracer": type(trace.get_tracer_provider()).__module__,
    "sampler": type(trace.get_tracer_provider().sampler).__name__,
    "meter": type(metrics.get_meter_provider()).__module__,
    "ended": ended,
    "flushed": flushed,
    "flush_seconds": flush_seconds,
    "scopes": sorted(set(StaticCredential.scopes)),
    "sdk_tracing": settings.tracing_implementation().__name__,
    "root_handlers": [type(h).__name__ for h in logging.getLogger().handlers],
    "stored_spans": sum(f'"effect {i}"' in stored for i in range(200)),
    "stored_ikey": "11111111-2222-3333-4444-555555555555" in stored,
}))
"""


def test_azure_monitor_is_configured_with_the_app_credential_and_never_blocks(
    tmp_path: Path,
) -> None:
    found = run(
        AZURE_MONITOR_PROBE,
        tmp_path,
        APPLICATIONINSIGHTS_CONNECTION_STRING=UNREACHABLE,
        APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="azure_app_service",  # no IMDS call
    )
    assert found["chosen"] == "azure-monitor"
    assert found["tracer"].startswith("opentelemetry.sdk.trace")
    assert found["meter"].startswith("opentelemetry.sdk.metrics")
    # Entra tokens from the app's identity (Application Insights with local auth off).
    assert found["scopes"] == ["https://monitor.azure.com//.default"]
    # Ending 200 spans waits for no export; the flush gives up on the dead endpoint quickly.
    assert found["ended"] < 1.0
    assert found["flushed"] is True and found["flush_seconds"] < 20
    # The export failed (nothing listens there) and was kept on disk for a retry: every span
    # went to this resource's exporter. Every one: the distro's default sampler (5 spans a
    # second, adaptive) kept about 30 of these 200.
    assert found["sampler"] == "ApplicationInsightsSampler"
    assert found["stored_ikey"] and found["stored_spans"] == 200
    # Azure SDK clients (Service Bus among them) trace through OpenTelemetry too; the root
    # logger's records are exported as well.
    assert found["sdk_tracing"] == "OpenTelemetrySpan"
    assert "LoggingHandler" in found["root_handlers"]


def test_a_broken_setting_is_logged_and_the_app_goes_on(tmp_path: Path) -> None:
    probe = """
import json
from adapters.telemetry_exporters import configure
from opentelemetry import trace
from orchestrator import telemetry
chosen = configure()
with telemetry.span("handle GateCheck", **{"retrain.model": "broken"}):
    telemetry.count("promotions", model="broken", outcome="failed")
print(json.dumps({"chosen": chosen, "tracer": type(trace.get_tracer_provider()).__name__}))
"""
    found = run(
        probe,
        tmp_path,
        APPLICATIONINSIGHTS_CONNECTION_STRING="InstrumentationKey=not-a-guid",
        APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
    )
    assert found["chosen"] is None
    assert found["tracer"] == "ProxyTracerProvider"  # nothing half-installed
    assert "OpenTelemetry exporter not configured" in found["stderr"]
    assert "ValueError" in found["stderr"]  # with the reason
