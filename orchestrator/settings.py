"""One typed Settings object, read from the same names the Functions host uses.

Azure: identity-based connections (`<Connection>__blobServiceUri`, `__queueServiceUri`,
`__fullyQualifiedNamespace`) with DefaultAzureCredential. Local development: connection
strings (Azurite's published development key). Which adapters get wired follows from what
is set; a missing or malformed setting fails at start with a message naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

APP_ROOT = Path(__file__).resolve().parent.parent
_NAMESPACE_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(\.[A-Za-z0-9-]{1,63})+")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=False)

    # Storage for state, audit, receipts and (locally) the queues standing in for Service Bus.
    storage_connection_string: str | None = Field(
        default=None, validation_alias=_alias("AzureWebJobsStorage")
    )
    storage_blob_uri: str | None = Field(
        default=None, validation_alias=_alias("AzureWebJobsStorage__blobServiceUri")
    )
    storage_queue_uri: str | None = Field(
        default=None, validation_alias=_alias("AzureWebJobsStorage__queueServiceUri")
    )
    # The host's shorthand for the public cloud: the service URIs follow from the account.
    storage_account_name: str | None = Field(
        default=None,
        validation_alias=_alias("AzureWebJobsStorage__accountName"),
        pattern=r"^[a-z0-9]{3,24}$",
    )
    state_container: str = Field(
        default="retrain-state", validation_alias=_alias("STATE_CONTAINER"), min_length=3
    )

    # Service Bus: present -> Service Bus; absent -> Azure Storage queues.
    service_bus_namespace: str | None = Field(
        default=None, validation_alias=_alias("ServiceBusConnection__fullyQualifiedNamespace")
    )
    service_bus_connection_string: str | None = Field(
        default=None, validation_alias=_alias("ServiceBusConnection")
    )
    orchestrator_queue: str = Field(
        default="orchestrator", validation_alias=_alias("ORCHESTRATOR_QUEUE"), min_length=3
    )
    approvals_queue: str = Field(
        default="approvals", validation_alias=_alias("APPROVALS_QUEUE"), min_length=3
    )
    max_deliveries: int = Field(default=5, ge=1, validation_alias=_alias("MAX_DELIVERIES"))
    # Dispatches of a training submit or a deployment that may fail transiently (each after
    # the SDK's own retries) before the step fails with the service's message.
    max_effect_attempts: int = Field(
        default=5, ge=1, validation_alias=_alias("MAX_EFFECT_ATTEMPTS")
    )
    # ... and at least this long after the first failure (redeliveries come at once).
    effect_retry_seconds: float = Field(
        default=900, ge=0, validation_alias=_alias("EFFECT_RETRY_SECONDS")
    )
    # How often a started deployment is polled (Azure ML deployments take minutes).
    deployment_poll_seconds: float = Field(
        default=30, gt=0, validation_alias=_alias("DEPLOYMENT_POLL_SECONDS")
    )

    # Event Hubs: data-ready events in; lifecycle events out.
    event_hub_namespace: str | None = Field(
        default=None, validation_alias=_alias("EventHubConnection__fullyQualifiedNamespace")
    )
    event_hub_connection_string: str | None = Field(
        default=None, validation_alias=_alias("EventHubConnection")
    )
    data_events_hub: str = Field(default="data-ready", validation_alias=_alias("DATA_EVENTS_HUB"))
    lifecycle_events_hub: str = Field(
        default="model-lifecycle", validation_alias=_alias("LIFECYCLE_EVENTS_HUB")
    )

    # Azure ML: all three present -> Azure ML backends; none -> local runner and endpoint.
    azureml_subscription_id: str | None = Field(
        default=None, validation_alias=_alias("AZUREML_SUBSCRIPTION_ID")
    )
    azureml_resource_group: str | None = Field(
        default=None, validation_alias=_alias("AZUREML_RESOURCE_GROUP")
    )
    azureml_workspace: str | None = Field(
        default=None, validation_alias=_alias("AZUREML_WORKSPACE")
    )
    azureml_compute: str | None = Field(default=None, validation_alias=_alias("AZUREML_COMPUTE"))
    azureml_instance_type: str = Field(
        default="Standard_DS3_v2", validation_alias=_alias("AZUREML_INSTANCE_TYPE")
    )

    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=_alias("MLFLOW_TRACKING_URI")
    )
    policy_dir: Path = Field(default=APP_ROOT / "policies", validation_alias=_alias("POLICY_DIR"))

    # Local stand-ins.
    local_dir: Path = Field(
        default=APP_ROOT / ".local", validation_alias=_alias("RETRAIN_LOCAL_DIR")
    )
    local_endpoint_url: str | None = Field(
        default=None, validation_alias=_alias("LOCAL_ENDPOINT_URL")
    )
    local_endpoint_dir_setting: Path | None = Field(
        default=None, validation_alias=_alias("LOCAL_ENDPOINT_DIR")
    )
    # Azure: where the canary evaluation reads the data collector's output and the feedback.
    canary_records_uri: str | None = Field(
        default=None, validation_alias=_alias("CANARY_RECORDS_URI")
    )
    canary_feedback_uri: str | None = Field(
        default=None, validation_alias=_alias("CANARY_FEEDBACK_URI")
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=_alias("RETRAIN_LOG_LEVEL")
    )

    @field_validator("storage_blob_uri", "storage_queue_uri", "local_endpoint_url")
    @classmethod
    def _is_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("service_bus_namespace", "event_hub_namespace")
    @classmethod
    def _is_namespace_host(cls, value: str | None) -> str | None:
        # The SDKs take a bare host name; a scheme or a path here fails only at the first
        # connection, deep in AMQP, so it is refused at start instead.
        if value is not None and not _NAMESPACE_HOST.fullmatch(value):
            raise ValueError(
                "must be a fully qualified namespace host name such as "
                "<name>.servicebus.windows.net (no scheme, no path, no port)"
            )
        return value

    @field_validator("storage_connection_string")
    @classmethod
    def _is_connection_string(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.strip().lower() == "usedevelopmentstorage=true":
            return value
        keys = {part.split("=", 1)[0] for part in value.split(";") if "=" in part}
        if not keys & {"AccountName", "BlobEndpoint"}:
            raise ValueError("is not a storage connection string (no AccountName/BlobEndpoint)")
        return value

    @model_validator(mode="after")
    def _storage_is_configured(self) -> Settings:
        if self.storage_account_name and not self.storage_connection_string:
            account = self.storage_account_name
            self.storage_blob_uri = (
                self.storage_blob_uri or f"https://{account}.blob.core.windows.net"
            )
            self.storage_queue_uri = (
                self.storage_queue_uri or f"https://{account}.queue.core.windows.net"
            )
        if not self.storage_connection_string and not self.storage_blob_uri:
            raise ValueError(
                "AzureWebJobsStorage (a connection string, local only), "
                "AzureWebJobsStorage__blobServiceUri or AzureWebJobsStorage__accountName "
                "(identity-based) must be set"
            )
        azureml = [
            self.azureml_subscription_id,
            self.azureml_resource_group,
            self.azureml_workspace,
        ]
        if any(azureml) and not all(azureml):
            missing = [
                name
                for name, value in zip(
                    ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE"),
                    azureml,
                    strict=True,
                )
                if not value
            ]
            raise ValueError(f"Azure ML is half configured: {', '.join(missing)} missing")
        return self

    @property
    def uses_service_bus(self) -> bool:
        return bool(self.service_bus_namespace or self.service_bus_connection_string)

    @property
    def uses_azureml(self) -> bool:
        return bool(self.azureml_workspace)

    @property
    def uses_event_hubs(self) -> bool:
        return bool(self.event_hub_namespace or self.event_hub_connection_string)

    @property
    def local_endpoint_dir(self) -> Path:
        return self.local_endpoint_dir_setting or self.local_dir / "endpoint"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.local_dir / 'mlflow.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError naming the bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name != "settings" else message)
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
