"""The online endpoint port on an Azure ML managed online endpoint (azure-ai-ml v2 SDK).

Every call starts an operation and returns; nothing waits for a long-running operation
(the orchestrator schedules a check message instead). Transient failures (408, 429, 5xx,
connection errors) are retried by azure-core's RetryPolicy, configured in `make_ml_client`;
it honours ``Retry-After``.

azure.ai.ml is imported lazily, inside functions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.traffic_rules import (
    check_deployment_name,
    live_only,
    mirror_after_traffic,
    validate_mirror_shape,
    validate_traffic,
)
from orchestrator.ports import (
    DeploymentBusy,
    DeploymentState,
    DeploymentStatus,
    EndpointError,
    InvalidTraffic,
)

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

# Azure ML provisioning states -> the port's states.
PROVISIONING_STATES: dict[str, DeploymentState] = {
    "creating": "creating",
    "updating": "creating",
    "scaling": "creating",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "failed",
    "cancelled": "failed",
    "deleting": "deleting",
}

# Retry settings for azure-core's RetryPolicy (status retries on 408/429/500/502/503/504;
# PUT/GET/DELETE are idempotent so they are retried too; Retry-After wins over the backoff).
DEFAULT_RETRY: dict[str, Any] = {
    "retry_total": 6,
    "retry_connect": 3,
    "retry_read": 3,
    "retry_status": 5,
    "retry_backoff_factor": 1.0,  # 0 s, 2 s, 4 s, 8 s ... capped below
    "retry_backoff_max": 30,
}

DATA_COLLECTIONS = ("model_inputs", "model_outputs")
# 409: another operation on the endpoint is in progress (Azure ML runs one at a time).
_TRANSIENT = {408, 409, 429, 500, 502, 503, 504}
_ENDPOINT_BUSY = {"creating", "updating", "deleting"}

_ARM_MODEL = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")
_SHORT_MODEL = re.compile(r"^azureml:(?P<name>[^:]+):(?P<version>[^:]+)$")


def make_ml_client(
    subscription_id: str,
    resource_group: str,
    workspace: str,
    credential: TokenCredential | None = None,
    **kwargs: Any,
) -> MLClient:
    """An MLClient with the retry policy above (kwargs override it, e.g. ``transport=``)."""
    from azure.ai.ml import MLClient

    if credential is None:
        from adapters.azure_credential import azure_credential

        credential = azure_credential()
    # show_progress=False: no progress dots from the SDK's pollers in the Functions log.
    options = {"show_progress": False, **DEFAULT_RETRY, **kwargs}
    return MLClient(credential, subscription_id, resource_group, workspace, **options)


def parse_model_id(model: object) -> tuple[str, str] | None:
    """(name, version) from an ARM model id or ``azureml:name:version``; None otherwise."""
    if not isinstance(model, str):
        return None
    match = _ARM_MODEL.search(model) or _SHORT_MODEL.match(model)
    return (match["name"], match["version"]) if match else None


class AzureMLEndpoint:
    """`OnlineEndpoint` on one Azure ML online endpoint (which must already exist): managed,
    or, with `kubernetes_compute`, a Kubernetes online endpoint on that attached AKS or Arc
    compute, whose deployments take `instance_type` from the instance types the compute
    defines (its default one is `defaultinstancetype`)."""

    def __init__(
        self,
        ml_client: MLClient | Callable[[], MLClient],
        endpoint_name: str,
        instance_type: str = "Standard_DS3_v2",
        instance_count: int = 1,
        *,
        data_collection_sampling_rate: float = 1.0,
        kubernetes_compute: str | None = None,
    ) -> None:
        self._client_or_factory = ml_client
        self._client: MLClient | None = None
        self.endpoint_name = endpoint_name
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.sampling_rate = data_collection_sampling_rate
        self.kubernetes_compute = kubernetes_compute

    @property
    def client(self) -> MLClient:
        if self._client is None:
            from azure.ai.ml import MLClient

            source = self._client_or_factory
            self._client = source if isinstance(source, MLClient) else source()
        return self._client

    # -- deployments -------------------------------------------------------------------------

    def _get_deployment(self, deployment: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.online_deployments.get(deployment, self.endpoint_name)
        except ResourceNotFoundError:
            return None

    def deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        """Start the deployment. What Azure ML still refuses after the retries is raised as
        `EndpointError` with the service's message (`transient` for 408/429/5xx and
        connection failures), so the orchestrator can fail the step instead of retrying a
        refusal for ever."""
        check_deployment_name(deployment)  # before any call
        try:
            return self._deploy(model_name, model_version, deployment)
        except EndpointError:
            raise
        except Exception as exc:
            doing = f"deploying {model_name}:{model_version} as {deployment}"
            raise _endpoint_error(exc, doing) from exc

    def _deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        from azure.ai.ml.entities import (
            DataCollector,
            DeploymentCollection,
            KubernetesOnlineDeployment,
            ManagedOnlineDeployment,
        )

        existing = self._get_deployment(deployment)
        if existing is not None:
            state = _map_state(existing.provisioning_state)
            if parse_model_id(existing.model) == (model_name, str(model_version)) and state in (
                "creating",
                "succeeded",
            ):
                log.info(
                    "deployment %s already serves %s:%s", deployment, model_name, model_version
                )
                return deployment
            if state == "deleting":
                raise EndpointError(f"deployment {deployment} is being deleted; deploy it later")
        if self.kubernetes_compute is not None:
            self._check_kubernetes_endpoint()
        kind = (
            ManagedOnlineDeployment
            if self.kubernetes_compute is None
            else KubernetesOnlineDeployment
        )
        spec = kind(
            name=deployment,
            endpoint_name=self.endpoint_name,
            model=f"azureml:{model_name}:{model_version}",
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            data_collector=DataCollector(
                collections={
                    name: DeploymentCollection(enabled="true") for name in DATA_COLLECTIONS
                },
                sampling_rate=self.sampling_rate,
            ),
            tags={"model_name": model_name, "model_version": str(model_version)},
        )
        # Starts the PUT and returns a poller; it is not awaited.
        self.client.online_deployments.begin_create_or_update(spec)
        return deployment

    def _check_kubernetes_endpoint(self) -> None:
        """A Kubernetes deployment goes only to a Kubernetes endpoint on the policy's compute:
        Azure ML would refuse it on a managed endpoint, and one on another cluster is a
        different target than the policy names. A refusal, not retried: a person creates or
        fixes the endpoint (docs/endpoint.md, Kubernetes targets)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            endpoint = self.client.online_endpoints.get(self.endpoint_name)
        except ResourceNotFoundError as exc:
            raise EndpointError(
                f"Kubernetes endpoint {self.endpoint_name} does not exist: create it on the "
                f"attached compute {self.kubernetes_compute} (docs/endpoint.md)"
            ) from exc
        compute = _compute_name(getattr(endpoint, "compute", None))
        if compute is None or compute.lower() != str(self.kubernetes_compute).lower():
            where = f"on compute {compute}" if compute else "a managed endpoint"
            raise EndpointError(
                f"endpoint {self.endpoint_name} is {where}, not a Kubernetes endpoint on "
                f"{self.kubernetes_compute} as the policy's endpoint_target says"
            )

    def deployment_state(self, deployment: str) -> DeploymentStatus:
        check_deployment_name(deployment)
        existing = self._get_deployment(deployment)
        if existing is None:
            return DeploymentStatus(deployment, "missing")
        raw = existing.provisioning_state
        state = _map_state(raw)
        parsed = parse_model_id(existing.model)
        error = (
            f"Azure ML provisioning state {getattr(raw, 'value', raw)}; see "
            "online_deployments.get_logs for the container log"
            if state == "failed"
            else None
        )
        return DeploymentStatus(
            deployment,
            state,
            error,
            model_name=parsed[0] if parsed else None,
            model_version=parsed[1] if parsed else None,
        )

    def delete(self, deployment: str) -> None:
        """Start removing the deployment once nothing routes to it.

        Azure ML refuses to delete a deployment while the endpoint is updating (the
        set-traffic a rollback sent just before), or one that still takes live traffic. Both
        raise `DeploymentBusy` without sending the DELETE: the orchestrator keeps the effect
        and the timer's sweep tries again. When the deployment is the only one serving (a
        first model rolled back), its traffic is taken away first, then the delete waits for
        that update.
        """
        check_deployment_name(deployment)
        try:
            self._delete(deployment)
        except EndpointError:
            raise
        except Exception as exc:
            error = _endpoint_error(exc, f"deleting deployment {deployment}")
            if getattr(exc, "status_code", None) == 409:  # an update started meanwhile
                raise DeploymentBusy(str(error)) from exc
            raise error from exc

    def _delete(self, deployment: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        endpoint = self.client.online_endpoints.get(self.endpoint_name)
        # The endpoint's state first: while it updates, the traffic read back may be the old.
        state = str(getattr(endpoint.provisioning_state, "value", endpoint.provisioning_state))
        if state.lower() in _ENDPOINT_BUSY:
            raise DeploymentBusy(
                f"endpoint {self.endpoint_name} is {state}: deployment {deployment} is deleted "
                "once the update is done"
            )
        live = live_only(endpoint.traffic or {})
        mirror = live_only(endpoint.mirror_traffic or {})
        if deployment in live:
            if _known_deployments(endpoint) <= {deployment}:
                # The endpoint's only deployment (a first model rolled back): take its traffic
                # away, then delete it once that update is done. Nothing serves afterwards.
                endpoint.traffic = {}
                endpoint.mirror_traffic = {}
                self.client.online_endpoints.begin_create_or_update(endpoint)
                raise DeploymentBusy(
                    f"deployment {deployment} is the only one of {self.endpoint_name}: its "
                    "traffic is taken away, then it is deleted"
                )
            # The update that should have moved the traffic is done, and it did not: the
            # traffic change failed or was overridden. Loud, and tried again.
            raise EndpointError(
                f"deployment {deployment} still takes {live[deployment]}% of the live traffic "
                f"of {self.endpoint_name} ({live}): not deleted; move its traffic first",
                transient=True,
            )
        if deployment in mirror:
            endpoint.mirror_traffic = {name: w for name, w in mirror.items() if name != deployment}
            self.client.online_endpoints.begin_create_or_update(endpoint)
            raise DeploymentBusy(
                f"deployment {deployment} is mirrored on {self.endpoint_name}: the mirror is "
                "removed, then it is deleted"
            )
        try:
            self.client.online_deployments.begin_delete(
                name=deployment, endpoint_name=self.endpoint_name
            )
        except ResourceNotFoundError:
            log.info("deployment %s is already gone", deployment)

    def deployments(self) -> list[DeploymentStatus]:
        """Every deployment of the endpoint (one list call), for the reconcile pass."""
        try:
            found = list(self.client.online_deployments.list(endpoint_name=self.endpoint_name))
        except Exception as exc:
            raise _endpoint_error(exc, f"listing the deployments of {self.endpoint_name}") from exc
        statuses = []
        for deployment in found:
            parsed = parse_model_id(deployment.model)
            statuses.append(
                DeploymentStatus(
                    deployment.name,
                    _map_state(deployment.provisioning_state),
                    model_name=parsed[0] if parsed else None,
                    model_version=parsed[1] if parsed else None,
                )
            )
        return sorted(statuses, key=lambda status: status.deployment)

    # -- traffic -----------------------------------------------------------------------------

    def traffic(self) -> dict[str, int]:
        endpoint = self.client.online_endpoints.get(self.endpoint_name)
        state = str(getattr(endpoint.provisioning_state, "value", endpoint.provisioning_state))
        if state.lower() in _ENDPOINT_BUSY:
            # Mid-update the split read back may be the old one: not an answer to compare.
            raise DeploymentBusy(f"endpoint {self.endpoint_name} is {state}: its traffic is moving")
        return live_only(endpoint.traffic or {})

    def mirror(self) -> dict[str, int]:
        """The endpoint's `mirror_traffic`, zero weights omitted (busy: as `traffic`)."""
        endpoint = self.client.online_endpoints.get(self.endpoint_name)
        state = str(getattr(endpoint.provisioning_state, "value", endpoint.provisioning_state))
        if state.lower() in _ENDPOINT_BUSY:
            raise DeploymentBusy(f"endpoint {self.endpoint_name} is {state}: its mirror is moving")
        return live_only(endpoint.mirror_traffic or {})

    def set_traffic(self, traffic: dict[str, int]) -> None:
        validate_traffic(traffic)
        endpoint = self.client.online_endpoints.get(self.endpoint_name)
        mirror = mirror_after_traffic(traffic, endpoint.mirror_traffic or {})
        validate_traffic(traffic, mirror, existing=_known_deployments(endpoint))
        # Absolute: the SDK sends the map with zero weights stripped; Azure gives every
        # deployment the map leaves out 0%.
        endpoint.traffic = dict(traffic)
        endpoint.mirror_traffic = mirror
        self.client.online_endpoints.begin_create_or_update(endpoint)

    def set_mirror(self, mirror: dict[str, int]) -> None:
        validate_mirror_shape(mirror)
        endpoint = self.client.online_endpoints.get(self.endpoint_name)
        live = live_only(endpoint.traffic or {})
        if live_only(mirror) and not live:
            raise InvalidTraffic("cannot mirror: the endpoint takes no live traffic")
        if live:
            validate_traffic(live, mirror, existing=_known_deployments(endpoint))
        endpoint.mirror_traffic = {name: w for name, w in mirror.items() if w > 0}
        self.client.online_endpoints.begin_create_or_update(endpoint)


def _endpoint_error(exc: Exception, doing: str) -> EndpointError:
    """An SDK or HTTP failure as an EndpointError carrying Azure ML's own message."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None)
        message = getattr(error, "message", None) or exc.message or str(exc)
        text = f"{doing}: Azure ML answered {status}" + (f" {code}" if code else "")
        return EndpointError(f"{text}: {message}", transient=status in _TRANSIENT)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return EndpointError(f"{doing}: Azure ML unreachable: {exc}", transient=True)
    # The SDK's own checks (MlException, ValidationException): a refusal.
    return EndpointError(f"{doing}: {exc}")


def _compute_name(compute: object) -> str | None:
    """An endpoint's compute as Azure ML returns it (an ARM id, `azureml:name` or the name)."""
    if not compute:
        return None
    return str(compute).rstrip("/").rsplit("/", 1)[-1].removeprefix("azureml:")


def _known_deployments(endpoint: Any) -> set[str]:
    """The endpoint's deployments: the SDK's get() lists them all in `traffic` (0 when idle),
    except the mirrored ones."""
    return set(endpoint.traffic or {}) | set(endpoint.mirror_traffic or {})


def _map_state(raw: object) -> DeploymentState:
    value = getattr(raw, "value", raw)  # the SDK hands back an enum member or a string
    state = PROVISIONING_STATES.get(str(value or "").lower())
    if state is None:
        log.warning("unknown provisioning state %r, read as creating", raw)
        return "creating"
    return state
