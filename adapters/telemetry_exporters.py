"""OpenTelemetry exporters, installed once per process by the bootstrap (first invocation):
Azure Monitor in Azure (`APPLICATIONINSIGHTS_CONNECTION_STRING`; host.json sets
`telemetryMode: OpenTelemetry` so the host's own spans go the same way), OTLP over HTTP
locally (`OTEL_EXPORTER_OTLP_ENDPOINT`, and the standard `OTEL_*` variables), else nothing
(the API stays a no-op)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

_configured = False


def configure(environ: Mapping[str, str] | None = None) -> str | None:
    """Install an exporter once per process, from the environment; returns which. Azure
    Monitor (`APPLICATIONINSIGHTS_CONNECTION_STRING`, with host.json `telemetryMode:
    OpenTelemetry`) or OTLP over HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`); nothing otherwise."""
    global _configured
    environ = os.environ if environ is None else environ
    if _configured:
        return None
    _configured = True
    try:
        if environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            from azure.monitor.opentelemetry import configure_azure_monitor

            from adapters.azure_credential import azure_credential

            # Application Insights with local auth off takes Entra tokens only: the app's
            # identity (Monitoring Metrics Publisher). The root logger: every module's logs.
            configure_azure_monitor(credential=azure_credential())
            return "azure-monitor"
        if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            _configure_otlp()
            return "otlp"
    except Exception:  # telemetry must never stop the app
        log.exception("OpenTelemetry exporter not configured")
    return None


def _configure_otlp() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "retrain-orchestrator"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
