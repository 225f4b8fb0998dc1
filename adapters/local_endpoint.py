"""The online endpoint port on the local endpoint server (`endpoint_server`), over HTTP.

Same rules as Azure: traffic maps are validated before anything is sent, `deploy` and
`delete` are idempotent and do not wait, and the server re-checks every map. Every request
carries the server's key (`Authorization: Bearer <key>`; `LOCAL_ENDPOINT_KEY`, or the key file
the server generated), as Azure ML's endpoint keys are sent; the key is never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.traffic_rules import (
    check_deployment_name,
    live_only,
    validate_mirror_shape,
    validate_traffic,
)
from orchestrator.ports import DeploymentStatus, EndpointError, InvalidTraffic

if TYPE_CHECKING:
    from orchestrator.settings import Settings

KEY_FILE = "endpoint.key"  # in RETRAIN_LOCAL_DIR: where the server keeps a key it generated

_STATES = {
    "Creating": "creating",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Deleting": "deleting",
}


def read_key_file(path: Path) -> str | None:
    """The key in `path` (as the server wrote it), or None when there is none."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


class LocalEndpoint:
    """`OnlineEndpoint` over the local endpoint server at `base_url`, sending `key`."""

    def __init__(
        self, base_url: str, timeout: float = 30.0, client: Any = None, *, key: str | None = None
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = client or httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalEndpoint:
        """The app's client: LOCAL_ENDPOINT_URL, with LOCAL_ENDPOINT_KEY, else the key the
        server generated into RETRAIN_LOCAL_DIR/endpoint.key."""
        if not settings.local_endpoint_url:
            raise RuntimeError(
                "LOCAL_ENDPOINT_URL is not set: start the local endpoint (devhost does) "
                "or configure Azure ML (AZUREML_WORKSPACE, ...)"
            )
        key = settings.local_endpoint_key or read_key_file(settings.local_dir / KEY_FILE)
        return cls(settings.local_endpoint_url, key=key)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LocalEndpoint:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def _check(self, response: Any, ok: tuple[int, ...] = (200, 201, 202, 204)) -> Any:
        if response.status_code in ok:
            return response.json() if response.content else None
        try:
            reason = response.json().get("error", response.text)
        except ValueError:
            reason = response.text
        if response.status_code == 400:
            raise InvalidTraffic(reason)
        if response.status_code == 401:
            reason = f"{reason} (set LOCAL_ENDPOINT_KEY to the endpoint server's key)"
        raise EndpointError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {reason}",
            transient=response.status_code in (408, 429) or response.status_code >= 500,
        )

    def deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        check_deployment_name(deployment)
        response = self._http.put(
            f"/deployments/{deployment}",
            json={"model_name": model_name, "model_version": str(model_version)},
        )
        self._check(response, ok=(200, 201))
        return deployment

    def deployment_state(self, deployment: str) -> DeploymentStatus:
        check_deployment_name(deployment)
        response = self._http.get(f"/deployments/{deployment}")
        if response.status_code == 404:
            return DeploymentStatus(deployment, "missing")
        body = self._check(response, ok=(200,))
        state = _STATES.get(body["provisioningState"])
        if state is None:
            raise EndpointError(f"unknown provisioning state {body['provisioningState']!r}")
        return DeploymentStatus(
            deployment,
            state,  # type: ignore[arg-type]
            body.get("error"),
            model_name=body.get("model_name"),
            model_version=body.get("model_version"),
        )

    def set_traffic(self, traffic: dict[str, int]) -> None:
        validate_traffic(traffic)
        self._check(self._http.put("/traffic", json={"traffic": dict(traffic)}), ok=(200,))

    def set_mirror(self, mirror: dict[str, int]) -> None:
        validate_mirror_shape(mirror)
        self._check(self._http.put("/mirror", json={"mirror_traffic": dict(mirror)}), ok=(200,))

    def delete(self, deployment: str) -> None:
        check_deployment_name(deployment)
        response = self._http.delete(f"/deployments/{deployment}")
        if response.status_code == 404:
            return
        self._check(response, ok=(200, 202, 204))

    def traffic(self) -> dict[str, int]:
        return live_only(self._check(self._http.get("/traffic"), ok=(200,))["traffic"])

    def mirror(self) -> dict[str, int]:
        return live_only(self._check(self._http.get("/traffic"), ok=(200,))["mirror_traffic"])

    def flush_records(self) -> None:
        """Wait until every request so far is in the server's request log."""
        self._check(self._http.post("/records/flush"), ok=(200,))
