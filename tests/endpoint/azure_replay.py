"""A recording azure-core transport with canned Azure ML control-plane responses.

Passed as ``transport=`` to the real `MLClient`: the real SDK builds and sends the real REST
requests; this transport records each one (method, URL, JSON body) and answers from a small
route table of canned ARM responses. Tests then read what was really sent.
"""

from __future__ import annotations

import copy
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict

SUB, RG, WS, LOCATION = "00000000-0000-0000-0000-000000000000", "rg-ml", "ws-ml", "westeurope"
WS_ID = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}"
    f"/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
)


class FakeCredential:
    """A TokenCredential that hands out a fixed token (no identity service is called)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("fake-token", int(time.time()) + 3600)


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    body: Any

    def json(self) -> Any:
        return self.body


def _response(request: Any, status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    """A real azure.core.rest response whose body is already read (what the SDK reads back)."""
    content = b"" if body is None else json.dumps(body).encode()
    response = HttpResponseImpl(
        request=request,
        internal_response=io.BytesIO(content),
        status_code=status,
        reason="OK" if status < 400 else "Error",
        content_type="application/json",
        headers=CaseInsensitiveDict({"Content-Type": "application/json", **(headers or {})}),
        stream_download_generator=None,
    )
    response._content = content  # the body, as if the stream had been read
    response._is_stream_consumed = True
    return response


Handler = Callable[[Recorded, re.Match[str]], tuple[int, Any] | tuple[int, Any, dict[str, str]]]


def endpoint_body(
    name: str, traffic: dict[str, int] | None = None, mirror: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "id": f"{WS_ID}/onlineEndpoints/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": LOCATION,
        "kind": "Managed",
        "identity": {"type": "SystemAssigned"},
        "tags": {},
        "properties": {
            "authMode": "Key",
            "scoringUri": f"https://{name}.{LOCATION}.inference.ml.azure.com/score",
            "provisioningState": "Succeeded",
            "traffic": dict(traffic or {}),
            "mirrorTraffic": dict(mirror or {}),
        },
    }


def deployment_body(
    endpoint: str, name: str, model: str, version: str, state: str = "Succeeded"
) -> dict[str, Any]:
    return {
        "id": f"{WS_ID}/onlineEndpoints/{endpoint}/deployments/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
        "location": LOCATION,
        "kind": "Managed",
        "sku": {"name": "Default", "capacity": 1},
        "tags": {},
        "properties": {
            "endpointComputeType": "Managed",
            "model": f"{WS_ID}/models/{model}/versions/{version}",
            "instanceType": "Standard_DS3_v2",
            "provisioningState": state,
            "scaleSettings": {"scaleType": "Default"},
        },
    }


def _not_found(what: str) -> tuple[int, Any]:
    return 404, {"error": {"code": "ResourceNotFound", "message": f"{what} not found"}}


class FakeAzureML(HttpTransport):
    """Records requests; answers from canned state (endpoints, deployments) and a route table.

    `fail_next` queues error statuses returned (in order) before the normal answer, to show
    that azure-core's retry policy retries them.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_next: list[int] = []
        self.sleeps: list[float] = []
        self._owner = threading.current_thread()
        self.background: list[Recorded] = []
        self.retry_after = "0"
        base = (
            r"/subscriptions/[^/]+/resourceGroups/[^/]+"
            r"/providers/Microsoft\.MachineLearningServices/workspaces/[^/]+"
        )
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            (
                "GET",
                re.compile(base + r"/onlineEndpoints/(?P<ep>[^/]+)/deployments/(?P<dep>[^/]+)$"),
                self._get_dep,
            ),
            (
                "PUT",
                re.compile(base + r"/onlineEndpoints/(?P<ep>[^/]+)/deployments/(?P<dep>[^/]+)$"),
                self._put_dep,
            ),
            (
                "DELETE",
                re.compile(base + r"/onlineEndpoints/(?P<ep>[^/]+)/deployments/(?P<dep>[^/]+)$"),
                self._delete_dep,
            ),
            (
                "GET",
                re.compile(base + r"/onlineEndpoints/(?P<ep>[^/]+)/deployments$"),
                self._list_deps,
            ),
            ("GET", re.compile(base + r"/onlineEndpoints/(?P<ep>[^/]+)$"), self._get_ep),
            ("PUT", re.compile(base + r"/onlineEndpoints/(?P<ep>[^/]+)$"), self._put_ep),
            ("GET", re.compile(base + r"$"), self._get_ws),
            (
                "PUT",
                re.compile(base + r"/data/(?P<name>[^/]+)/versions/(?P<ver>[^/]+)$"),
                self._put_data,
            ),
            (
                "GET",
                re.compile(base + r"/data/(?P<name>[^/]+)/versions/(?P<ver>[^/]+)$"),
                self._get_data,
            ),
            ("GET", re.compile(base + r"/datastores/(?P<name>[^/]+)$"), self._get_datastore),
            ("GET", re.compile(r".*/operations/(?P<op>[^/]+)$"), self._get_operation),
        ]

    # -- the transport -----------------------------------------------------------------------

    def __enter__(self) -> FakeAzureML:
        return self

    def __exit__(self, *args: Any) -> None:
        return None

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def sleep(self, duration: float) -> None:
        """The retry policy's waits (in the caller's thread), recorded instead of slept.

        The SDK's LRO pollers run in their own threads and sleep for real (the canned
        operations say Retry-After: 3600), so they stay idle and send nothing during a test.
        """
        if threading.current_thread() is self._owner:
            self.sleeps.append(duration)
        else:
            time.sleep(duration)

    def send(self, request: Any, **kwargs: Any) -> Any:
        raw = getattr(request, "content", None)
        if raw is None:
            raw = getattr(request, "body", None)
        if isinstance(raw, bytes):
            raw = raw.decode()
        body = json.loads(raw) if isinstance(raw, str) and raw else raw
        path = urlparse(request.url).path
        rec = Recorded(request.method, request.url, path, body)
        # What the caller's thread sent; the SDK's background LRO pollers go to `background`.
        if threading.current_thread() is self._owner:
            self.requests.append(rec)
        else:
            self.background.append(rec)
        if self.fail_next and threading.current_thread() is self._owner:
            status = self.fail_next.pop(0)
            return _response(
                request,
                status,
                {"error": {"code": "Transient", "message": "try again"}},
                {"Retry-After": self.retry_after},
            )
        for method, pattern, handler in self.routes:
            match = pattern.search(path)
            if method == request.method and match:
                answer = handler(rec, match)
                return _response(request, *answer)
        return _response(request, *_not_found(f"{request.method} {path}"))

    # -- helpers for tests -------------------------------------------------------------------

    def sent(self, method: str, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and contains in r.path]

    def add_endpoint(
        self, name: str, traffic: dict[str, int] | None = None, mirror: dict[str, int] | None = None
    ) -> None:
        self.endpoints[name] = endpoint_body(name, traffic, mirror)

    def add_deployment(
        self, endpoint: str, name: str, model: str, version: str, state: str = "Succeeded"
    ) -> None:
        self.deployments[(endpoint, name)] = deployment_body(endpoint, name, model, version, state)

    # -- canned answers ----------------------------------------------------------------------

    def _get_dep(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any]:
        found = self.deployments.get((m["ep"], m["dep"]))
        return (200, found) if found else _not_found(f"deployment {m['dep']}")

    def _put_dep(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        answer = copy.deepcopy(rec.body)
        answer.update(id=f"{WS_ID}/onlineEndpoints/{m['ep']}/deployments/{m['dep']}", name=m["dep"])
        answer["properties"]["provisioningState"] = "Creating"
        answer["properties"].setdefault("scaleSettings", {"scaleType": "Default"})
        self.deployments[(m["ep"], m["dep"])] = answer
        op = f"https://management.azure.com{WS_ID}/operations/dep-{m['dep']}?api-version=2023-04-01-preview"
        return 201, answer, {"Azure-AsyncOperation": op, "Retry-After": "3600"}

    def _delete_dep(
        self, rec: Recorded, m: re.Match[str]
    ) -> tuple[int, Any] | tuple[int, Any, dict[str, str]]:
        found = self.deployments.get((m["ep"], m["dep"]))
        if not found:
            return 204, None
        found["properties"]["provisioningState"] = "Deleting"
        op = f"https://management.azure.com{WS_ID}/operations/del-{m['dep']}?api-version=2023-04-01-preview"
        return 202, None, {"Location": op, "Retry-After": "3600"}

    def _get_ep(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any]:
        found = self.endpoints.get(m["ep"])
        return (200, copy.deepcopy(found)) if found else _not_found(f"endpoint {m['ep']}")

    def _put_ep(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        answer = copy.deepcopy(rec.body)
        answer.update(id=f"{WS_ID}/onlineEndpoints/{m['ep']}", name=m["ep"])
        answer["properties"]["provisioningState"] = "Updating"
        self.endpoints[m["ep"]] = answer
        op = f"https://management.azure.com{WS_ID}/operations/ep-{m['ep']}?api-version=2023-04-01-preview"
        return 200, answer, {"Azure-AsyncOperation": op, "Retry-After": "3600"}

    def _get_ws(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any]:
        return 200, {"id": WS_ID, "name": WS, "location": LOCATION, "properties": {}}

    def _put_data(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any]:
        answer = copy.deepcopy(rec.body) or {}
        answer.update(id=f"{WS_ID}/data/{m['name']}/versions/{m['ver']}", name=m["ver"])
        return 200, answer

    def _get_data(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any]:
        return _not_found(f"data {m['name']}")

    def _get_datastore(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any]:
        return 200, {
            "id": f"{WS_ID}/datastores/{m['name']}",
            "name": m["name"],
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": "wsstorage",
                "containerName": "azureml-blobstore",
                "endpoint": "core.windows.net",
                "protocol": "https",
                "credentials": {"credentialsType": "None"},
                "isDefault": True,
            },
        }

    def _get_operation(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        return 200, {"status": "InProgress"}, {"Retry-After": "3600"}

    def _list_deps(self, rec: Recorded, m: re.Match[str]) -> tuple[int, Any]:
        found = [body for (ep, _), body in self.deployments.items() if ep == m["ep"]]
        return 200, {"value": copy.deepcopy(found)}
