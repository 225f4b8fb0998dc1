"""The online endpoint port on the local endpoint server (`endpoint_server`), over HTTP.

One `LocalEndpoint` is one endpoint of that server, the one a policy names (`endpoint`): every
call goes to ``/{endpoint}/...``, so two models on two endpoints never touch each other's
deployments, traffic or request log. Same rules as Azure: traffic maps are validated before
anything is sent, `deploy` and `delete` are idempotent and do not wait, and the server
re-checks every map. An endpoint the server has not seen yet (it comes into being on its first
deployment) reads as an empty one. Every request carries the server's key
(`Authorization: Bearer <key>`; `LOCAL_ENDPOINT_KEY`, or the key file the server generated),
as Azure ML's endpoint keys are sent; the key is never logged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
# Azure ML's online endpoint names (and the policy's `endpoint`): 3 to 32 characters, a
# letter first, then letters, digits and '-'.
ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{2,31}$")
ENDPOINT_NOT_FOUND = "EndpointNotFound"  # the `code` of the server's 404 for an endpoint
ENDPOINTS_DIR = "endpoints"  # in the server's data dir: one folder per endpoint

_STATES = {
    "Creating": "creating",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Deleting": "deleting",
}


def is_valid_endpoint_name(name: str) -> bool:
    return bool(ENDPOINT_NAME.match(name))


def endpoints_root(data_dir: Path | str) -> Path:
    return Path(data_dir) / ENDPOINTS_DIR


def endpoint_data_dir(data_dir: Path | str, endpoint: str) -> Path:
    """Where the server keeps `endpoint`'s state and request log (``records.sqlite``, read by
    the canary evaluation), under its data dir (LOCAL_ENDPOINT_DIR)."""
    if not is_valid_endpoint_name(endpoint):
        raise ValueError(f"{endpoint!r} is not a valid endpoint name")
    return endpoints_root(data_dir) / endpoint


def read_key_file(path: Path) -> str | None:
    """The key in `path` (as the server wrote it), or None when there is none."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _endpoint_missing(response: Any) -> bool:
    """A 404 saying the endpoint does not exist (yet), not that a route is unknown."""
    if response.status_code != 404:
        return False
    try:
        return bool(response.json().get("code") == ENDPOINT_NOT_FOUND)
    except (ValueError, AttributeError):
        return False


class LocalEndpoint:
    """`OnlineEndpoint` for endpoint `endpoint` of the local endpoint server at `base_url`,
    sending `key`."""

    def __init__(
        self,
        base_url: str,
        endpoint: str,
        timeout: float = 30.0,
        client: Any = None,
        *,
        key: str | None = None,
    ) -> None:
        import httpx

        if not is_valid_endpoint_name(endpoint):
            raise ValueError(
                f"{endpoint!r} is not a valid endpoint name "
                "(3 to 32 characters: a letter, then letters, digits and '-')"
            )
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self._prefix = f"/{quote(endpoint)}"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = client or httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers
        )

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str) -> LocalEndpoint:
        """The app's client of `endpoint` (the policy's): LOCAL_ENDPOINT_URL, with
        LOCAL_ENDPOINT_KEY, else the key the server generated into
        RETRAIN_LOCAL_DIR/endpoint.key."""
        if not settings.local_endpoint_url:
            raise RuntimeError(
                "LOCAL_ENDPOINT_URL is not set: start the local endpoint (devhost does) "
                "or configure Azure ML (AZUREML_WORKSPACE, ...)"
            )
        key = settings.local_endpoint_key or read_key_file(settings.local_dir / KEY_FILE)
        return cls(settings.local_endpoint_url, endpoint, key=key)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LocalEndpoint:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def _path(self, *parts: str) -> str:
        return "/".join([self._prefix, *parts])

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
            self._path("deployments", deployment),
            json={"model_name": model_name, "model_version": str(model_version)},
        )
        self._check(response, ok=(200, 201))
        return deployment

    def deployment_state(self, deployment: str) -> DeploymentStatus:
        check_deployment_name(deployment)
        response = self._http.get(self._path("deployments", deployment))
        if response.status_code == 404:  # no such deployment, or no such endpoint yet
            return DeploymentStatus(deployment, "missing")
        return _status(self._check(response, ok=(200,)))

    def deployments(self) -> list[DeploymentStatus]:
        """Every deployment of this endpoint, with its model and state (none before the
        endpoint's first deployment)."""
        response = self._http.get(self._path("deployments"))
        if _endpoint_missing(response):
            return []
        return [_status(body) for body in self._check(response, ok=(200,))]

    def set_traffic(self, traffic: dict[str, int]) -> None:
        validate_traffic(traffic)
        response = self._http.put(self._path("traffic"), json={"traffic": dict(traffic)})
        self._check(response, ok=(200,))

    def set_mirror(self, mirror: dict[str, int]) -> None:
        validate_mirror_shape(mirror)
        response = self._http.put(self._path("mirror"), json={"mirror_traffic": dict(mirror)})
        self._check(response, ok=(200,))

    def delete(self, deployment: str) -> None:
        check_deployment_name(deployment)
        response = self._http.delete(self._path("deployments", deployment))
        if response.status_code == 404:
            return
        self._check(response, ok=(200, 202, 204))

    def _maps(self) -> dict[str, dict[str, int]]:
        response = self._http.get(self._path("traffic"))
        if _endpoint_missing(response):
            return {"traffic": {}, "mirror_traffic": {}}
        return self._check(response, ok=(200,))  # type: ignore[no-any-return]

    def traffic(self) -> dict[str, int]:
        return live_only(self._maps()["traffic"])

    def mirror(self) -> dict[str, int]:
        return live_only(self._maps()["mirror_traffic"])

    def flush_records(self) -> None:
        """Wait until every request so far is in this endpoint's request log."""
        response = self._http.post(self._path("records", "flush"))
        if _endpoint_missing(response):
            return  # no endpoint yet: nothing was ever recorded
        self._check(response, ok=(200,))


def _status(body: dict[str, Any]) -> DeploymentStatus:
    state = _STATES.get(body["provisioningState"])
    if state is None:
        raise EndpointError(f"unknown provisioning state {body['provisioningState']!r}")
    return DeploymentStatus(
        body["name"],
        state,  # type: ignore[arg-type]
        body.get("error"),
        model_name=body.get("model_name"),
        model_version=body.get("model_version"),
    )
