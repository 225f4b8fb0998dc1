"""One bootstrap that wires the real (Azure) or local adapters from Settings.

Azure when the settings say so (identity-based connections, DefaultAzureCredential);
otherwise the local stand-ins: Azurite queues for Service Bus and Event Hubs, the local
pipeline runner, the local endpoint. Heavy SDKs are imported here only when wired, and the
whole runtime is built on first use, not when function_app.py is imported.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
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


@dataclass
class Runtime:
    """Everything a trigger needs, built from settings."""

    settings: Settings
    clock: Clock = utc_now

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
        )
        return Orchestrator(ports)


class MlflowMetrics:
    """MetricsReader: offline metrics from the registry's runs; live metrics of a canary step.

    Locally the canary evaluation runs here, over the local endpoint's records, and logs to
    MLflow before the gate reads it back; in Azure the evaluation component runs as an Azure
    ML job on a schedule (see docs/endpoint.md) and this only reads.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics:
        return self._runtime.registry.offline(model, candidate_version, champion_version)

    def live(self, model: str, promotion_id: str, step: int, arms: list[ArmWindow]) -> LiveMetrics:
        from pipelines.canary import live_metrics

        settings = self._runtime.settings
        start = min(arm.window_start for arm in arms)
        end = max(arm.window_end for arm in arms)
        if not settings.uses_azureml and settings.local_endpoint_url:
            from pipelines.canary.evaluate_canary import evaluate_local_endpoint

            evaluate_local_endpoint(
                settings.local_endpoint_url,
                tracking_uri=settings.tracking_uri,
                promotion_id=promotion_id,
                step=step,
                windows={arm.deployment: (arm.window_start, arm.window_end) for arm in arms},
            )
        return live_metrics.read_live_metrics(
            settings.tracking_uri,
            promotion_id,
            step,
            [arm.deployment for arm in arms],
            start,
            end,
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
