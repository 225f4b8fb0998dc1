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
            # Every span, unless OTEL_TRACES_SAMPLER says otherwise: the distro's default
            # limits spans per second (5, adapting its rate), so a burst (a rollback's
            # decision and its effects) would lose spans of the one trace that explains why a
            # version is or is not in production. The app makes a few spans per message.
            sampling = {} if environ.get("OTEL_TRACES_SAMPLER") else {"sampling_ratio": 1.0}
            configure_azure_monitor(
                connection_string=environ["APPLICATIONINSIGHTS_CONNECTION_STRING"],
                credential=azure_credential(),
                **sampling,
            )
            return "azure-monitor"
        if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            _configure_otlp(environ)
            return "otlp"
    except Exception:  # telemetry must never stop the app
        log.exception("OpenTelemetry exporter not configured")
    return None


def _signal_endpoint(environ: Mapping[str, str], signal: str) -> str:
    """The OTLP/HTTP URL of one signal: `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` as it is, else
    `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/<signal>` (the specification's rule, applied to the
    given environment: the exporters themselves would read `os.environ`)."""
    own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if own:
        return own
    return f"{environ['OTEL_EXPORTER_OTLP_ENDPOINT'].rstrip('/')}/v1/{signal}"


def _configure_otlp(environ: Mapping[str, str]) -> None:
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
    spans = OTLPSpanExporter(endpoint=_signal_endpoint(environ, "traces"))
    provider.add_span_processor(BatchSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=_signal_endpoint(environ, "metrics"))
    )
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
