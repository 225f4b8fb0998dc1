"""One typed Settings object, read from the same names the Functions host uses.

Azure: identity-based connections (`<Connection>__blobServiceUri`, `__queueServiceUri`,
`__fullyQualifiedNamespace`) with DefaultAzureCredential. Local development: connection
strings (Azurite's published development key). Which adapters get wired follows from what
is set; a missing or malformed setting fails at start with a message naming it.

The settings are declared once, in `_Declared` below: each attribute's type, the app setting
it reads and its rules. Two things are derived from that declaration:

- `check_environment()`: the rules applied to the environment in plain Python. The Functions
  app calls it when the host imports it (on every cold start), so it must not cost the
  pydantic and pydantic-settings imports and a model build (~2x a bare app's import).
- `Settings`, the pydantic-settings model `load_settings()` returns, built on first use (the
  first invocation, which imports pydantic for the orchestrator anyway). It applies the same
  rules and stays the authority; tests/triggers/test_cold_start.py holds the two to agreeing.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

    from domain.data_location import DataAccount

APP_ROOT = Path(__file__).resolve().parent.parent
# The audience of the local issuer's tokens (adapters/local_issuer.py), when Entra ID is not set.
LOCAL_API_AUDIENCE = "api://retrain-orchestrator-local"
_NAMESPACE_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(\.[A-Za-z0-9-]{1,63})+")
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_TENANT_ID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_AZUREML = ("azureml_subscription_id", "azureml_resource_group", "azureml_workspace")
# Settings that hold secrets: never in the settings' repr.
_SECRETS = frozenset({"message_signing_key", "local_endpoint_key"})


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


# --- the rules of single settings: plain functions, raising ValueError(what is wrong) ------


def _is_url(value: str) -> None:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")


def _is_namespace_host(value: str) -> None:
    # The SDKs take a bare host name; a scheme or a path here fails only at the first
    # connection, deep in AMQP, so it is refused at start instead.
    if not _NAMESPACE_HOST.fullmatch(value):
        raise ValueError(
            "must be a fully qualified namespace host name such as "
            "<name>.servicebus.windows.net (no scheme, no path, no port)"
        )


def _is_connection_string(value: str) -> None:
    if value.strip().lower() == "usedevelopmentstorage=true":
        return
    keys = {part.split("=", 1)[0] for part in value.split(";") if "=" in part}
    if not keys & {"AccountName", "BlobEndpoint"}:
        raise ValueError("is not a storage connection string (no AccountName/BlobEndpoint)")


def _is_tenant_id(value: str) -> None:
    # Tokens name their tenant by id (the tid claim), never by domain name.
    if not _TENANT_ID.fullmatch(value):
        raise ValueError("must be the tenant id, a GUID (not a domain name)")


def _blob_endpoint_of(connection_string: str) -> str:
    """A storage connection string's blob endpoint, as the Storage SDK reads it."""
    if connection_string.strip().lower() == "usedevelopmentstorage=true":
        return "http://127.0.0.1:10000/devstoreaccount1"
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    parts = {key.strip(): value.strip() for key, value in parts.items()}
    if parts.get("BlobEndpoint"):
        return parts["BlobEndpoint"].rstrip("/")
    protocol = parts.get("DefaultEndpointsProtocol", "https")
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    return f"{protocol}://{parts.get('AccountName', '')}.blob.{suffix}"


def _is_account_name(value: str) -> None:
    if not _ACCOUNT_NAME.fullmatch(value):
        raise ValueError("must be a storage account name: 3 to 24 lowercase letters and digits")


@dataclass(frozen=True)
class _Setting:
    """Where one attribute comes from (the app setting `name`) and the rules its value obeys."""

    name: str
    default: Any = None
    ge: float | None = None
    gt: float | None = None
    min_length: int | None = None
    check: Callable[[str], None] | None = None


def setting(name: str, default: Any = None, **rules: Any) -> Any:
    """Declare an attribute of Settings (typed Any: the annotation is the attribute's type)."""
    return _Setting(name, default, **rules)


class _Declared:
    """Every setting: attribute, type, the host's name for it, default and rules."""

    # Storage for state, audit, receipts and (locally) the queues standing in for Service Bus.
    storage_connection_string: str | None = setting(
        "AzureWebJobsStorage", check=_is_connection_string
    )
    storage_blob_uri: str | None = setting("AzureWebJobsStorage__blobServiceUri", check=_is_url)
    storage_queue_uri: str | None = setting("AzureWebJobsStorage__queueServiceUri", check=_is_url)
    # The host's shorthand for the public cloud: the service URIs follow from the account.
    storage_account_name: str | None = setting(
        "AzureWebJobsStorage__accountName", check=_is_account_name
    )
    state_container: str = setting("STATE_CONTAINER", "retrain-state", min_length=3)

    # Service Bus: present -> Service Bus; absent -> Azure Storage queues.
    service_bus_namespace: str | None = setting(
        "ServiceBusConnection__fullyQualifiedNamespace", check=_is_namespace_host
    )
    service_bus_connection_string: str | None = setting("ServiceBusConnection")
    orchestrator_queue: str = setting("ORCHESTRATOR_QUEUE", "orchestrator", min_length=3)
    approvals_queue: str = setting("APPROVALS_QUEUE", "approvals", min_length=3)
    max_deliveries: int = setting("MAX_DELIVERIES", 5, ge=1)
    # Dispatches of an effect that may fail transiently (each after the SDK's own retries)
    # before it is given up (a submit or a deployment then fails its step).
    max_effect_attempts: int = setting("MAX_EFFECT_ATTEMPTS", 5, ge=1)
    # ... and at least this long after the first failure (redeliveries come at once).
    effect_retry_seconds: float = setting("EFFECT_RETRY_SECONDS", 900, ge=0)
    # A scheduled gate check or approval timeout this late is sent again by the timer's sweep
    # (its delivery was lost, or is held in the lease of a process that crashed).
    overdue_check_seconds: float = setting("OVERDUE_CHECK_SECONDS", 60, ge=0)
    # How often a started deployment is polled (Azure ML deployments take minutes).
    deployment_poll_seconds: float = setting("DEPLOYMENT_POLL_SECONDS", 30, gt=0)

    # Event Hubs: data-ready events in; lifecycle events out.
    event_hub_namespace: str | None = setting(
        "EventHubConnection__fullyQualifiedNamespace", check=_is_namespace_host
    )
    event_hub_connection_string: str | None = setting("EventHubConnection")
    data_events_hub: str = setting("DATA_EVENTS_HUB", "data-ready")
    lifecycle_events_hub: str = setting("LIFECYCLE_EVENTS_HUB", "model-lifecycle")

    # Azure ML: all three present -> Azure ML backends; none -> local runner and endpoint.
    azureml_subscription_id: str | None = setting("AZUREML_SUBSCRIPTION_ID")
    azureml_resource_group: str | None = setting("AZUREML_RESOURCE_GROUP")
    azureml_workspace: str | None = setting("AZUREML_WORKSPACE")
    azureml_compute: str | None = setting("AZUREML_COMPUTE")
    azureml_instance_type: str = setting("AZUREML_INSTANCE_TYPE", "Standard_DS3_v2")

    mlflow_tracking_uri: str | None = setting("MLFLOW_TRACKING_URI")
    policy_dir: Path = setting("POLICY_DIR", APP_ROOT / "policies")
    # The container the blob trigger watches (its binding reads the same setting): a policy
    # whose `data.container` is another one is refused at start (its data would never land).
    data_container: str | None = setting("DATA_CONTAINER", None, min_length=3)

    # Who may move a promotion (orchestrator/people.py): the Entra ID tenant whose tokens a
    # person's command carries, and the API app's Application ID URI and/or client id (comma-
    # separated). Unset: the local issuer in RETRAIN_LOCAL_DIR/issuer (adapters/local_issuer.py).
    entra_tenant_id: str | None = setting("ENTRA_TENANT_ID", check=_is_tenant_id)
    entra_api_audience: str | None = setting("ENTRA_API_AUDIENCE", min_length=1)
    # "True", set by App Service when its authentication is on: the HTTP caller is then read
    # from X-MS-CLIENT-PRINCIPAL (which App Service strips from what callers send).
    website_auth_enabled: str | None = setting("WEBSITE_AUTH_ENABLED")
    # Set by the platform on every Azure Functions instance: the app runs in Azure, where no
    # key or token issuer may be made up locally.
    website_instance_id: str | None = setting("WEBSITE_INSTANCE_ID")
    # Automation opt-in: POST /api/promotions/{id}/rollback with the function key alone (no
    # person's token, no App Service principal), audited as `function-key`. Off: such a
    # rollback is a 401, since whoever holds the key (e.g. a dashboard viewer) is nobody known.
    http_key_rollback: bool = setting("HTTP_KEY_ROLLBACK", False)
    # Set by devhost only: POST /api/dashboard/sign-in mints local-issuer tokens for any name.
    # Never honoured in Azure (WEBSITE_INSTANCE_ID set) nor with ENTRA_TENANT_ID.
    devhost_local_sign_in: bool = setting("DEVHOST_LOCAL_SIGN_IN", False)

    # Local stand-ins.
    local_dir: Path = setting("RETRAIN_LOCAL_DIR", APP_ROOT / ".local")
    local_endpoint_url: str | None = setting("LOCAL_ENDPOINT_URL", check=_is_url)
    # The bearer key of the local endpoint's control plane (endpoint_server --key). Never logged.
    local_endpoint_key: str | None = setting("LOCAL_ENDPOINT_KEY", min_length=16)
    local_endpoint_dir_setting: Path | None = setting("LOCAL_ENDPOINT_DIR")
    # Azure: where the canary evaluation reads the data collector's output and the feedback.
    canary_records_uri: str | None = setting("CANARY_RECORDS_URI")
    canary_feedback_uri: str | None = setting("CANARY_FEEDBACK_URI")
    # Azure: the Log Analytics workspace (its id, a GUID) receiving the online endpoint's
    # traffic log (AmlOnlineEndpointTrafficLog): the canary's latency samples. Unset, a policy
    # with a latency_ms canary gate is refused at start in Azure (the collector has none).
    canary_latency_workspace_id: str | None = setting("CANARY_LATENCY_WORKSPACE_ID")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("RETRAIN_LOG_LEVEL", "INFO")

    # The data account (the blob trigger's `DataStorage` connection): data URIs must name its
    # blobs (`data_blob_endpoint`). None set: the app's own storage account.
    data_storage_connection_string: str | None = setting("DataStorage", check=_is_connection_string)
    data_storage_blob_uri: str | None = setting("DataStorage__blobServiceUri", check=_is_url)
    data_storage_account_name: str | None = setting(
        "DataStorage__accountName", check=_is_account_name
    )
    # Development only: data URIs may also be local paths (file://, bare) the local runner copies.
    allow_local_data_paths: bool = setting("ALLOW_LOCAL_DATA_PATHS", False)

    # The key of the MAC on the app's own messages (orchestrator/signing.py): a Key Vault
    # reference in Azure, required there; locally generated into RETRAIN_LOCAL_DIR when unset.
    # A secret: never logged.
    message_signing_key: str | None = setting("MESSAGE_SIGNING_KEY", min_length=32)


def _whole(values: Mapping[str, Any]) -> dict[str, Any]:
    """The rules across settings, on the attributes' values: the values they fill in."""
    filled: dict[str, Any] = {}
    account = values["storage_account_name"]
    if account and not values["storage_connection_string"]:
        filled["storage_blob_uri"] = (
            values["storage_blob_uri"] or f"https://{account}.blob.core.windows.net"
        )
        filled["storage_queue_uri"] = (
            values["storage_queue_uri"] or f"https://{account}.queue.core.windows.net"
        )
    if not values["storage_connection_string"] and not filled.get(
        "storage_blob_uri", values["storage_blob_uri"]
    ):
        raise ValueError(
            "AzureWebJobsStorage (a connection string, local only), "
            "AzureWebJobsStorage__blobServiceUri or AzureWebJobsStorage__accountName "
            "(identity-based) must be set"
        )
    if bool(values["entra_tenant_id"]) != bool(values["entra_api_audience"]):
        raise ValueError("ENTRA_TENANT_ID and ENTRA_API_AUDIENCE are set together or not at all")
    azureml = [values[attribute] for attribute in _AZUREML]
    if any(azureml) and not all(azureml):
        missing = [
            vars(_Declared)[attribute].name for attribute in _AZUREML if not values[attribute]
        ]
        raise ValueError(f"Azure ML is half configured: {', '.join(missing)} missing")
    if values["allow_local_data_paths"] and any(azureml):
        raise ValueError("ALLOW_LOCAL_DATA_PATHS is for development only: not with Azure ML")
    in_azure = bool(values["website_instance_id"])
    if in_azure and not values["entra_tenant_id"]:
        raise ValueError(
            "ENTRA_TENANT_ID and ENTRA_API_AUDIENCE must be set in Azure: people's tokens are "
            "checked against Entra ID there, never against a local issuer"
        )
    if (values["service_bus_namespace"] or in_azure) and not values["message_signing_key"]:
        raise ValueError(
            "MESSAGE_SIGNING_KEY must be set in Azure and with Service Bus (a Key Vault reference "
            "to a random secret of at least 32 characters): it signs the app's own messages"
        )
    return filled


class _Derived:
    """What the settings imply: properties of Settings."""

    @property
    def uses_service_bus(self: Settings) -> bool:
        return bool(self.service_bus_namespace or self.service_bus_connection_string)

    @property
    def uses_azureml(self: Settings) -> bool:
        return bool(self.azureml_workspace)

    @property
    def uses_event_hubs(self: Settings) -> bool:
        return bool(self.event_hub_namespace or self.event_hub_connection_string)

    @property
    def api_audiences(self: Settings) -> tuple[str, ...]:
        """The audiences a person's token may name: Entra's API app, else the local one."""
        if not self.entra_api_audience:
            return (LOCAL_API_AUDIENCE,)
        return tuple(part.strip() for part in self.entra_api_audience.split(",") if part.strip())

    @property
    def app_service_auth(self: Settings) -> bool:
        return (self.website_auth_enabled or "").strip().lower() == "true"

    @property
    def local_issuer_dir(self: Settings) -> Path:
        """Where the local token issuer keeps its key pair (no ENTRA_TENANT_ID)."""
        return self.local_dir / "issuer"

    @property
    def local_endpoint_dir(self: Settings) -> Path:
        return self.local_endpoint_dir_setting or self.local_dir / "endpoint"

    @property
    def data_blob_endpoint(self: Settings) -> str:
        """The data account's blob endpoint, which every data URI must name: `DataStorage`
        (a connection string's BlobEndpoint, or its AccountName; `UseDevelopmentStorage=true`:
        Azurite's `http://127.0.0.1:10000/devstoreaccount1`), `DataStorage__blobServiceUri`
        or `DataStorage__accountName`; none set: the app's own storage (`AzureWebJobsStorage`),
        as devhost and the CLI read it."""
        if self.data_storage_connection_string:
            return _blob_endpoint_of(self.data_storage_connection_string)
        if self.data_storage_blob_uri:
            return self.data_storage_blob_uri.rstrip("/")
        if self.data_storage_account_name:
            return f"https://{self.data_storage_account_name}.blob.core.windows.net"
        if self.storage_connection_string:
            return _blob_endpoint_of(self.storage_connection_string)
        return str(self.storage_blob_uri).rstrip("/")

    @property
    def data_account(self: Settings) -> DataAccount:
        """Where data may come from (`domain.data_location.check_data_uri`)."""
        from domain.data_location import DataAccount

        return DataAccount(self.data_blob_endpoint, self.allow_local_data_paths)

    @property
    def tracking_uri(self: Settings) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.local_dir / 'mlflow.db').resolve()}"


def _declared() -> dict[str, tuple[Any, _Setting]]:
    """Each attribute's type and setting, in declaration order."""
    hints = get_type_hints(_Declared)
    return {name: (hints[name], vars(_Declared)[name]) for name in _Declared.__annotations__}


# --- the check at start: the declared rules, in plain Python ----------------------------------

_INTEGER = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")  # "5", "1_000", "5.0" as pydantic


def _number(kind: type[int] | type[float], raw: str) -> float:
    text = raw.strip()
    if text.isascii():  # pydantic reads ASCII digits only
        if kind is int and _INTEGER.fullmatch(text):
            return int(text.split(".", 1)[0])
        if kind is float:
            with contextlib.suppress(ValueError):
                return float(text)
    raise ValueError(f"must be {'an integer' if kind is int else 'a number'}")


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _boolean(raw: str) -> bool:
    """As pydantic reads a boolean from a string: these words in any case, nothing else."""
    word = raw.lower() if raw.isascii() else raw
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError("must be a boolean (true/false, 1/0, yes/no, on/off)")


def _parse(kind: Any, raw: str) -> Any:
    """An environment string as pydantic's lax mode reads it into `kind`, or ValueError."""
    if get_origin(kind) is Literal:
        if raw not in get_args(kind):
            raise ValueError(f"must be one of {', '.join(map(repr, get_args(kind)))}")
        return raw
    if kind is bool:
        return _boolean(raw)
    if kind is int or kind is float:
        return _number(kind, raw)
    if kind is Path:
        return Path(raw)
    if kind is str:
        return raw
    # A new kind of setting needs its reading here too (tests/triggers/test_cold_start.py).
    raise TypeError(f"no check at start for settings of type {kind!r}")


def _optional(kind: Any) -> Any:
    if get_origin(kind) is types.UnionType:
        [kind] = [arg for arg in get_args(kind) if arg is not type(None)]
    return kind


def _read(rule: _Setting, kind: Any, raw: str) -> Any:
    value = _parse(_optional(kind), raw)
    if rule.ge is not None and not value >= rule.ge:
        raise ValueError(f"must be >= {rule.ge}")
    if rule.gt is not None and not value > rule.gt:
        raise ValueError(f"must be > {rule.gt}")
    if rule.min_length is not None and len(value) < rule.min_length:
        raise ValueError(f"must be at least {rule.min_length} characters")
    if rule.check is not None:
        rule.check(value)
    return value


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Check the settings in the environment; raise SettingsError naming each bad one.

    The same rules as `load_settings()` without building the model: cheap enough for the
    import that a Functions host makes on every cold start.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for attribute, (kind, rule) in _declared().items():
        raw = environ.get(rule.name)
        try:
            values[attribute] = rule.default if raw is None else _read(rule, kind, raw)
        except ValueError as exc:
            problems.append(f"{rule.name}: {exc}")
    if not problems:
        try:
            _whole(values)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))


# --- the model: built from the same declaration on first use ---------------------------------

if TYPE_CHECKING:

    class Settings(_Declared, _Derived, BaseSettings):
        """What type checkers see: the declared attributes, typed, and the properties."""


_model: type[Settings] | None = None
_model_lock = threading.Lock()


def _build_model() -> type[Settings]:
    from pydantic import AliasChoices, Field, create_model, field_validator, model_validator
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class SettingsBase(BaseSettings, _Derived):
        model_config = SettingsConfigDict(
            case_sensitive=True, extra="ignore", populate_by_name=False
        )

        @model_validator(mode="after")
        def _whole_is_consistent(self) -> SettingsBase:
            for attribute, value in _whole(vars(self)).items():
                setattr(self, attribute, value)
            return self

    def validator(attribute: str, check: Callable[[str], None]) -> Any:
        def run_check(cls: type, value: str | None) -> str | None:
            if value is not None:
                check(value)
            return value

        return field_validator(attribute)(run_check)

    fields: dict[str, Any] = {}
    validators: dict[str, Any] = {}
    for attribute, (kind, rule) in _declared().items():
        constraints = {"ge": rule.ge, "gt": rule.gt, "min_length": rule.min_length}
        field = Field(
            default=rule.default,
            validation_alias=AliasChoices(rule.name),
            repr=attribute not in _SECRETS,  # a traceback or a log of the settings shows none
            **{key: value for key, value in constraints.items() if value is not None},
        )
        fields[attribute] = (kind, field)
        if rule.check is not None:
            validators[f"_check_{attribute}"] = validator(attribute, rule.check)
    return create_model(  # type: ignore[call-overload, no-any-return]
        "Settings",
        __base__=SettingsBase,
        __module__=__name__,
        __validators__=validators,
        **fields,
    )


def settings_model() -> type[Settings]:
    """The Settings model (pydantic-settings), built on first use."""
    global _model
    with _model_lock:
        if _model is None:
            _model = _build_model()
            globals()["Settings"] = _model
        return _model


def __getattr__(name: str) -> Any:
    # `from orchestrator.settings import Settings` builds the model then, not at import.
    if name == "Settings":
        return settings_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError naming the bad setting."""
    from pydantic import ValidationError

    try:
        return settings_model()(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name != "settings" else message)
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
