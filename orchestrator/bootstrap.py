"""One bootstrap that wires the real (Azure) or local adapters from Settings.

Azure when the settings say so (identity-based connections, DefaultAzureCredential);
otherwise the local stand-ins: Azurite queues for Service Bus and Event Hubs, the local
pipeline runner, the local endpoint. Heavy SDKs are imported here only when wired, and the
whole runtime is built on first use, not when function_app.py is imported.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.aggregate import ModelAggregate
from orchestrator.clock import Clock, utc_now
from orchestrator.policy import ModelPolicy, load_policies
from orchestrator.ports import ArmWindow
from orchestrator.service import Orchestrator, Ports
from orchestrator.settings import Settings, load_settings

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient, QueueServiceClient

    from adapters.dead_letters import BlobDeadLetters
    from adapters.endpoint import OnlineEndpoint
    from orchestrator.metrics import LiveMetrics, OfflineMetrics
    from pipelines.backend import TrainingBackend

log = logging.getLogger(__name__)

DEAD_LETTER_CONTAINER = "dead-letters"


def _credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# MLflow's HTTP client retries for minutes by default; a gate check must fail fast instead
# (an unreachable tracking server is "inconclusive", and the check is scheduled again).
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


@dataclass
class Runtime:
    """Everything a trigger needs, built from settings."""

    settings: Settings
    clock: Clock = utc_now

    def __post_init__(self) -> None:
        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        for package in ("orchestrator", "adapters", "triggers", "pipelines", "promotion"):
            logging.getLogger(package).setLevel(self.settings.log_level)

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        if self.settings.storage_connection_string:
            return BlobServiceClient.from_connection_string(
                _resolve_dev_storage(self.settings.storage_connection_string)
            )
        assert self.settings.storage_blob_uri
        return BlobServiceClient(self.settings.storage_blob_uri, credential=_credential())

    @cached_property
    def queue_service(self) -> QueueServiceClient:
        from azure.storage.queue import QueueServiceClient

        if self.settings.storage_connection_string:
            return QueueServiceClient.from_connection_string(
                _resolve_dev_storage(self.settings.storage_connection_string)
            )
        uri = self.settings.storage_queue_uri or str(self.settings.storage_blob_uri).replace(
            ".blob.", ".queue."
        )
        return QueueServiceClient(uri, credential=_credential())

    def queue(self, name: str) -> QueueClient:
        from adapters.storage_queue_bus import ensure_queue

        return ensure_queue(self.queue_service.get_queue_client(name))

    @cached_property
    def policies(self) -> dict[str, ModelPolicy]:
        return load_policies(self.settings.policy_dir)

    @cached_property
    def dead_letters(self) -> BlobDeadLetters:
        from adapters.blob_state import ensure_container
        from adapters.dead_letters import BlobDeadLetters

        container = self.blob_service.get_container_client(DEAD_LETTER_CONTAINER)
        return BlobDeadLetters(ensure_container(container))

    def bus_for(self, queue_name: str) -> Any:
        if self.settings.uses_service_bus:
            from adapters.service_bus import ServiceBusBus

            return ServiceBusBus.connect(
                queue_name,
                namespace=self.settings.service_bus_namespace,
                connection_string=self.settings.service_bus_connection_string,
            )
        from adapters.storage_queue_bus import StorageQueueBus

        self.queue(f"{queue_name}-poison")
        return StorageQueueBus(self.queue(queue_name), clock=self.clock)

    @cached_property
    def training(self) -> TrainingBackend:
        settings = self.settings
        if settings.uses_azureml:
            from adapters.azureml_jobs import AzureMLTrainingBackend

            return AzureMLTrainingBackend.from_workspace(
                subscription_id=str(settings.azureml_subscription_id),
                resource_group=str(settings.azureml_resource_group),
                workspace=str(settings.azureml_workspace),
            )
        from adapters.blob_fetch import BlobFetcher
        from adapters.local_runner import LocalTrainingBackend

        fetcher = BlobFetcher(blob_service_client=self.blob_service)
        return LocalTrainingBackend(
            settings.local_dir / "runs", settings.tracking_uri, fetch=fetcher
        )

    def endpoint_for(self, policy: ModelPolicy) -> OnlineEndpoint:
        settings = self.settings
        if settings.uses_azureml:
            from adapters.azureml_endpoint import AzureMLEndpoint, make_ml_client

            return AzureMLEndpoint(
                lambda: make_ml_client(
                    str(settings.azureml_subscription_id),
                    str(settings.azureml_resource_group),
                    str(settings.azureml_workspace),
                ),
                policy.endpoint,
                instance_type=settings.azureml_instance_type,
            )
        if not settings.local_endpoint_url:
            raise RuntimeError(
                "LOCAL_ENDPOINT_URL is not set: start the local endpoint (devhost does) "
                "or configure Azure ML (AZUREML_WORKSPACE, ...)"
            )
        from adapters.local_endpoint import LocalEndpoint

        return LocalEndpoint(settings.local_endpoint_url)

    @cached_property
    def events(self) -> Any:
        settings = self.settings
        if settings.uses_event_hubs:
            from adapters.events import EventHubPublisher

            return EventHubPublisher.connect(
                settings.lifecycle_events_hub,
                namespace=settings.event_hub_namespace,
                connection_string=settings.event_hub_connection_string,
            )
        from adapters.events import QueueEventPublisher

        return QueueEventPublisher(self.queue(settings.lifecycle_events_hub))

    @cached_property
    def registry(self) -> Any:
        from adapters.mlflow_registry import MlflowRegistry

        return MlflowRegistry(self.settings.tracking_uri)

    @cached_property
    def orchestrator(self) -> Orchestrator:
        from adapters.blob_state import BlobAuditLog, BlobStateStore, ensure_container

        container = ensure_container(
            self.blob_service.get_container_client(self.settings.state_container)
        )
        ports = Ports(
            store=BlobStateStore(container, ModelAggregate, ModelAggregate.new),
            audit=BlobAuditLog(container),
            bus=self.bus_for(self.settings.orchestrator_queue),
            training=self.training,
            endpoints=self.endpoint_for,
            metrics=MlflowMetrics(self),
            registry=self.registry,
            events=self.events,
            policies=self.policies,
            clock=self.clock,
            deployment_poll=timedelta(seconds=self.settings.deployment_poll_seconds),
            default_compute=self.settings.azureml_compute,
            max_effect_attempts=self.settings.max_effect_attempts,
            effect_retry_window=timedelta(seconds=self.settings.effect_retry_seconds),
        )
        return Orchestrator(ports)


class MlflowMetrics:
    """MetricsReader: offline metrics from the registry's runs; live metrics of a canary step.

    The canary evaluation runs here, in the gate check, and logs to MLflow before the gate
    reads it back: locally over the local endpoint's request log, in Azure over the data
    collector's JSONL and the feedback tables (CANARY_RECORDS_URI, CANARY_FEEDBACK_URI).
    The same module is the Azure ML command component pipelines/canary/component.yml, for
    evaluating a window by hand (see docs/endpoint.md).
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics:
        return self._runtime.registry.offline(model, candidate_version, champion_version)

    def live(self, model: str, promotion_id: str, step: int, arms: list[ArmWindow]) -> LiveMetrics:
        """Evaluate the step's request log, log it to MLflow, and read it back as the gate does.

        Arms judged over different windows (the production bake compares the candidate now
        with production during the last canary step) are evaluated window by window.
        """
        from pipelines.canary import evaluate_canary

        settings = self._runtime.settings
        by_window: dict[tuple[datetime, datetime], list[str]] = {}
        for arm in arms:
            by_window.setdefault((arm.window_start, arm.window_end), []).append(arm.deployment)
        merged: LiveMetrics | None = None
        for (start, end), deployments in by_window.items():
            records, feedback = self._records(start, end)
            evaluate_canary.evaluate(
                records,
                feedback,
                tracking=settings.tracking_uri,
                promotion_id=promotion_id,
                step=step,
                window_start=start,
                window_end=end,
                deployments=deployments,
            )
            from pipelines.canary.live_metrics import read_live_metrics

            read = read_live_metrics(
                settings.tracking_uri, promotion_id, step, deployments, start, end
            )
            if merged is None:
                merged = read
            else:
                merged = merged.model_copy(
                    update={
                        "arms": {**merged.arms, **read.arms},
                        "window_start": min(merged.window_start, read.window_start),
                        "window_end": max(merged.window_end, read.window_end),
                    }
                )
        assert merged is not None
        return merged

    def _records(self, start: datetime, end: datetime) -> tuple[list[Any], dict[str, Any]]:
        """The endpoint's request records in the window, and the feedback labels."""
        from pipelines.canary import evaluate_canary

        settings = self._runtime.settings
        if not settings.uses_azureml:
            if settings.local_endpoint_url:
                from adapters.local_endpoint import LocalEndpoint

                with LocalEndpoint(settings.local_endpoint_url) as endpoint:
                    endpoint.flush_records()
            folder = settings.local_endpoint_dir
            return (
                evaluate_canary.read_local_records(folder, start, end),
                evaluate_canary.read_local_feedback(folder),
            )
        # Azure: the data collector's JSONL and the feedback tables, fetched from blob storage.
        if not settings.canary_records_uri or not settings.canary_feedback_uri:
            raise RuntimeError(
                "CANARY_RECORDS_URI and CANARY_FEEDBACK_URI must be set to judge a canary in Azure"
            )
        from adapters.blob_fetch import BlobFetcher

        fetch = BlobFetcher(credential=_credential())
        with tempfile.TemporaryDirectory() as folder:
            records_dir, feedback_dir = Path(folder, "records"), Path(folder, "feedback")
            # Only the hour folders around the window: the collector keeps every hour.
            window = evaluate_canary.collector_files_in(start, end)
            fetch(settings.canary_records_uri, records_dir, include=window)
            fetch(settings.canary_feedback_uri, feedback_dir)
            return (
                evaluate_canary.read_data_collector(records_dir, start, end),
                evaluate_canary.read_feedback_table(feedback_dir),
            )


def _resolve_dev_storage(connection_string: str) -> str:
    """`UseDevelopmentStorage=true` means Azurite on its default ports, as the host reads it."""
    if connection_string.strip().lower() != "usedevelopmentstorage=true":
        return connection_string
    from adapters.azurite import DEV_ACCOUNT, DEV_KEY

    host = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={host}:10000/{DEV_ACCOUNT};QueueEndpoint={host}:10001/{DEV_ACCOUNT};"
        f"TableEndpoint={host}:10002/{DEV_ACCOUNT};"
    )


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(load_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, devhost) or forget it so the next use rebuilds it."""
    global _runtime
    with _lock:
        _runtime = runtime
