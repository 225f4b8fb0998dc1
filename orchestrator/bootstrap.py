"""One bootstrap that wires the real (Azure) or local adapters from Settings.

Azure when the settings say so (identity-based connections, `adapters.azure_credential`);
otherwise the local stand-ins: Azurite queues for Service Bus and Event Hubs, the local
pipeline runner, the local endpoint. Heavy SDKs are imported here only when wired, and the
whole runtime is built on first use, not when function_app.py is imported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from domain.policy import ModelPolicy, PolicyError
from orchestrator.aggregate import ModelAggregate
from orchestrator.clock import Clock, utc_now
from orchestrator.handlers import MessageHandlers
from orchestrator.maintenance import Maintenance
from orchestrator.monitor import Monitor
from orchestrator.outbox import Outbox
from orchestrator.policy_files import load_policies, policy_for
from orchestrator.ports import (
    AuditLog,
    DataLedger,
    IdentityVerifier,
    LatencyReader,
    MetricsReader,
    OnlineEndpoint,
    Ports,
    StateStore,
    TrainingBackend,
)
from orchestrator.queries import Queries
from orchestrator.reconcile import Reconciler
from orchestrator.settings import Settings, load_settings
from orchestrator.signing import MessageSigner, local_signing_key

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient, QueueServiceClient

    from adapters.dead_letters import BlobDeadLetters

log = logging.getLogger(__name__)

DEAD_LETTER_CONTAINER = "dead-letters"


# MLflow's HTTP client retries for minutes by default; a gate check must fail fast instead
# (an unreachable tracking server is "inconclusive", and the check is scheduled again).
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


# What `bootstrap` lets a caller replace (tests: in-memory fakes; devhost: nothing).
OVERRIDABLE = frozenset(
    {
        "store",
        "audit",
        "bus",
        "training",
        "endpoints",
        "metrics",
        "registry",
        "events",
        "policies",
        "dead_letters",
        "identity",
        "signer",
        "ledger",
    }
)


def bootstrap(
    settings: Settings | None = None, *, clock: Clock = utc_now, **overrides: Any
) -> Runtime:
    """The runtime for `settings` (default: from the environment), with any port replaced.

    `overrides` names ports from OVERRIDABLE: `store`, `audit`, `bus`, `training`,
    `endpoints` (a callable policy -> OnlineEndpoint), `metrics`, `registry`, `events`,
    `policies` (model -> ModelPolicy), `dead_letters`, `signer` (the MessageSigner of the
    app's own messages), `identity` (the IdentityVerifier of people's tokens) and `ledger`
    (the DataLedger of data keys and pending data). A port not
    overridden is built from the settings on first use, so a runtime whose ports are all
    given never opens a client.
    """
    unknown = sorted(set(overrides) - OVERRIDABLE)
    if unknown:
        raise TypeError(f"bootstrap: unknown port(s) {unknown}; known: {sorted(OVERRIDABLE)}")
    return Runtime(settings if settings is not None else load_settings(), clock, overrides)


@dataclass
class Runtime:
    """Everything a trigger needs, built from settings on first use (see `bootstrap`)."""

    settings: Settings
    clock: Clock = utc_now
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        for package in (
            "orchestrator",
            "adapters",
            "triggers",
            "pipelines",
            "promotion",
            "retrain",
            "domain",
        ):
            logging.getLogger(package).setLevel(self.settings.log_level)

    # ------------------------------------------------------------------ the service layer

    @cached_property
    def ports(self) -> Ports:
        settings = self.settings
        return Ports(
            store=self._given("store", self._state_store),
            audit=self._given("audit", self._audit_log),
            bus=self._given("bus", lambda: self.bus_for(settings.orchestrator_queue)),
            training=self.training,
            endpoints=self._given("endpoints", lambda: self.endpoint_for),
            metrics=self._given("metrics", self._metrics),
            registry=self.registry,
            events=self.events,
            policies=self.policies,
            signer=self.signer,
            ledger=self._given("ledger", self._data_ledger),
            clock=self.clock,
            deployment_poll=timedelta(seconds=settings.deployment_poll_seconds),
            default_compute=settings.azureml_compute,
            data_account=settings.data_account,
            max_effect_attempts=settings.max_effect_attempts,
            effect_retry_window=timedelta(seconds=settings.effect_retry_seconds),
            overdue_check_grace=timedelta(seconds=settings.overdue_check_seconds),
            identity=self.identity,
        )

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.ports)

    @cached_property
    def handlers(self) -> MessageHandlers:
        return MessageHandlers(self.ports, self.outbox)

    @cached_property
    def queries(self) -> Queries:
        return Queries(self.ports)

    @cached_property
    def maintenance(self) -> Maintenance:
        return Maintenance(
            self.ports, self.outbox, Reconciler(self.ports, self.outbox, self.handlers)
        )

    @cached_property
    def monitor(self) -> Monitor:
        """The production monitor's pass (retrain on decay), run by the timer."""
        return Monitor(self.ports, self.handlers)

    def _given(self, port: str, build: Callable[[], Any]) -> Any:
        return self.overrides[port] if port in self.overrides else build()

    # ------------------------------------------------------------------ the adapters

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        from adapters.storage_clients import blob_service

        return blob_service(self.settings)

    @cached_property
    def queue_service(self) -> QueueServiceClient:
        from adapters.storage_clients import queue_service

        return queue_service(self.settings)

    def queue(self, name: str) -> QueueClient:
        from adapters.storage_queue_bus import ensure_queue

        return ensure_queue(self.queue_service.get_queue_client(name))

    @cached_property
    def policies(self) -> dict[str, ModelPolicy]:
        policies = self._given(
            "policies",
            lambda: load_policies(
                self.settings.policy_dir, watched_container=self.settings.data_container
            ),
        )
        settings = self.settings
        refuse_unmeasured_gates(
            policies, settings.uses_azureml, bool(settings.canary_latency_workspace_id)
        )
        return policies

    @cached_property
    def dead_letters(self) -> BlobDeadLetters:
        if "dead_letters" in self.overrides:
            return self.overrides["dead_letters"]
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
                transport_id=self.signer.keyed_id,
            )
        from adapters.storage_queue_bus import StorageQueueBus

        self.queue(f"{queue_name}-poison")
        return StorageQueueBus(self.queue(queue_name), clock=self.clock)

    @cached_property
    def training(self) -> TrainingBackend:
        if "training" in self.overrides:
            return self.overrides["training"]
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
            settings.local_dir / "runs",
            settings.tracking_uri,
            fetch=fetcher,
            on_ended=self._local_run_events(),
        )

    def _local_run_events(self) -> Any:
        """Azure ML's run events, locally: to the queue devhost reads for the data-events hub
        (none when a real hub is configured: Azure ML's own events go there)."""
        from adapters.local_run_events import LocalRunEvents, local_hub_queue

        queue = local_hub_queue(self.settings.data_events_hub)
        if self.settings.uses_event_hubs or queue is None:
            return None
        return LocalRunEvents(lambda: self.queue(queue))

    def endpoint_for(self, policy: ModelPolicy) -> OnlineEndpoint:
        settings = self.settings
        if settings.uses_azureml:
            from adapters.azureml_endpoint import AzureMLEndpoint, make_ml_client

            def client() -> Any:
                return make_ml_client(
                    str(settings.azureml_subscription_id),
                    str(settings.azureml_resource_group),
                    str(settings.azureml_workspace),
                )

            target = policy.endpoint_target
            if target.kind == "kubernetes":  # an attached AKS/Arc compute (docs/endpoint.md)
                return AzureMLEndpoint(
                    client,
                    policy.endpoint,
                    instance_type=target.instance_type,
                    instance_count=target.instance_count,
                    kubernetes_compute=target.compute,
                )
            return AzureMLEndpoint(
                client, policy.endpoint, instance_type=settings.azureml_instance_type
            )
        if not settings.local_endpoint_url:
            raise RuntimeError(
                "LOCAL_ENDPOINT_URL is not set: start the local endpoint (devhost does) "
                "or configure Azure ML (AZUREML_WORKSPACE, ...)"
            )
        from adapters.local_endpoint import LocalEndpoint

        # The policy's endpoint on the local server, with its key: LOCAL_ENDPOINT_KEY, else
        # the one the server generated.
        return LocalEndpoint.from_settings(settings, policy.endpoint)

    @cached_property
    def events(self) -> Any:
        if "events" in self.overrides:
            return self.overrides["events"]
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
        if "registry" in self.overrides:
            return self.overrides["registry"]
        from adapters.mlflow_registry import MlflowRegistry

        return MlflowRegistry(self.settings.tracking_uri)

    def _state_container(self) -> ContainerClient:
        from adapters.blob_state import ensure_container

        return ensure_container(
            self.blob_service.get_container_client(self.settings.state_container)
        )

    def _state_store(self) -> StateStore[ModelAggregate]:
        from adapters.blob_state import BlobStateStore

        return BlobStateStore(self._state_container(), ModelAggregate, ModelAggregate.new)

    def _data_ledger(self) -> DataLedger:
        from adapters.data_ledger import BlobDataLedger

        return BlobDataLedger(self._state_container())

    def _audit_log(self) -> AuditLog:
        from adapters.blob_state import BlobAuditLog

        return BlobAuditLog(self._state_container())

    @cached_property
    def signer(self) -> MessageSigner:
        if "signer" in self.overrides:
            return self.overrides["signer"]
        key = self.settings.message_signing_key
        if key:
            return MessageSigner(key.encode())
        # Locally: one key per checkout, made on first use, readable by its owner only.
        return MessageSigner(local_signing_key(self.settings.local_dir))

    @cached_property
    def identity(self) -> IdentityVerifier:
        """Who a person's command is from: Entra ID's tokens for the API app when
        ENTRA_TENANT_ID is set, else the local issuer's (adapters/local_issuer.py)."""
        if "identity" in self.overrides:
            return self.overrides["identity"]  # type: ignore[no-any-return]
        settings = self.settings
        if settings.entra_tenant_id:
            from adapters.identity import JwtVerifier

            # Entra's issuer URLs and `tid` claims spell the tenant in lower case.
            tenant = settings.entra_tenant_id.lower()
            return JwtVerifier.for_entra(tenant, settings.api_audiences)
        from adapters.local_issuer import LocalIssuer

        return LocalIssuer(settings.local_issuer_dir).verifier()

    def _metrics(self) -> MetricsReader:
        from adapters.mlflow_metrics import MlflowMetrics

        latency = self._latency_reader()
        # Locally, a model's live metrics come from its own endpoint's request log.
        return MlflowMetrics(
            self.settings,
            self.registry,
            endpoint_of=lambda model: policy_for(self.policies, model).endpoint,
            latency=latency,
        )

    def _latency_reader(self) -> LatencyReader | None:
        """Azure: the endpoint's traffic log in Log Analytics (the data collector records no
        latency); locally None: the local request log carries latencies."""
        workspace = self.settings.canary_latency_workspace_id
        if not self.settings.uses_azureml or not workspace:
            return None
        from adapters.azure_credential import azure_credential
        from adapters.traffic_log_latency import TrafficLogLatency

        return TrafficLogLatency(workspace, azure_credential())


def refuse_unmeasured_gates(
    policies: Mapping[str, ModelPolicy], in_azure: bool, latency_source: bool
) -> None:
    """A canary gate whose metric the metrics source cannot give could never pass: refuse the
    policy when the runtime loads its policies, naming the gate (in Azure, latency needs
    CANARY_LATENCY_WORKSPACE_ID: the data collector records none)."""
    if not in_azure or latency_source:
        return
    for model, policy in policies.items():
        for index, gate in enumerate(policy.canary.gates):
            if gate.metric == "latency_ms":
                raise PolicyError(
                    f"policy of {model}",
                    f"canary.gates.{index}",
                    "latency_ms: in Azure the data collector records no latency; set "
                    "CANARY_LATENCY_WORKSPACE_ID (the Log Analytics workspace receiving the "
                    "endpoint's AmlOnlineEndpointTrafficLog) or remove the gate",
                )


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            from adapters.telemetry_exporters import configure

            configure()  # exporters, from the environment: once per process, never at import
            _runtime = Runtime(load_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, devhost) or forget it so the next use rebuilds it."""
    global _runtime
    with _lock:
        _runtime = runtime
