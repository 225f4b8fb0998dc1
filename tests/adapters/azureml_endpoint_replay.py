"""Canned Azure ML control-plane responses for online endpoints and deployments.

`FakeAzureML` is the shared recording transport (`tests.azure_recording`) with a small route
table of canned ARM responses: passed as ``transport=`` to the real `MLClient`, the real SDK
builds and sends the real REST requests and tests read what was really sent.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from tests.azure_recording import Canned, Recorded, RecordingTransport, not_found

SUB, RG, WS, LOCATION = "00000000-0000-0000-0000-000000000000", "rg-ml", "ws-ml", "westeurope"
WS_ID = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}"
    f"/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
)


Handler = Callable[[Recorded, re.Match[str]], Canned]

# What a Kubernetes instance type grants a deployment's container, as Azure ML reports it.
K8S_RESOURCES = {
    "containerResourceRequests": {"cpu": "100m", "memory": "2Gi"},
    "containerResourceLimits": {"cpu": "1", "memory": "2Gi"},
}


def endpoint_body(
    name: str,
    traffic: dict[str, int] | None = None,
    mirror: dict[str, int] | None = None,
    compute: str | None = None,
) -> dict[str, Any]:
    """A managed endpoint; with `compute`, a Kubernetes endpoint on that attached compute."""
    body: dict[str, Any] = {
        "id": f"{WS_ID}/onlineEndpoints/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": LOCATION,
        "kind": "Managed" if compute is None else "Kubernetes",
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
    if compute is not None:
        body["properties"]["compute"] = f"{WS_ID}/computes/{compute}"
    return body


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


class FakeAzureML(RecordingTransport):
    """Records requests; answers from canned state (endpoints, deployments) and a route table.

    `fail_next` queues error statuses returned (in order) before the normal answer, to show
    that azure-core's retry policy retries them. Only the caller's thread is answered from
    `fail_next` and `faults`, and recorded in `requests`; the SDK's background LRO pollers
    are recorded in `background`.
    """

    def __init__(self) -> None:
        super().__init__(self._route)
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
        endpoint = base + r"/onlineEndpoints/(?P<ep>[^/]+)"
        deployment = endpoint + r"/deployments/(?P<dep>[^/]+)$"
        data = base + r"/data/(?P<name>[^/]+)/versions/(?P<ver>[^/]+)$"
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(deployment), self._get_dep),
            ("PUT", re.compile(deployment), self._put_dep),
            ("DELETE", re.compile(deployment), self._delete_dep),
            ("GET", re.compile(endpoint + r"/deployments$"), self._list_deps),
            ("GET", re.compile(endpoint + r"$"), self._get_ep),
            ("PUT", re.compile(endpoint + r"$"), self._put_ep),
            ("GET", re.compile(base + r"$"), self._get_ws),
            ("PUT", re.compile(data), self._put_data),
            ("GET", re.compile(data), self._get_data),
            ("GET", re.compile(base + r"/datastores/(?P<name>[^/]+)$"), self._get_datastore),
            ("GET", re.compile(r".*/operations/(?P<op>[^/]+)$"), self._get_operation),
        ]

    # -- the transport -----------------------------------------------------------------------

    @staticmethod
    def path_of(url: str) -> str:
        """`Recorded.path`: the bare path (no scheme, host or query)."""
        return urlparse(url).path

    def in_caller_thread(self) -> bool:
        return threading.current_thread() is self._owner

    def record(self, recorded: Recorded) -> None:
        if self.in_caller_thread():
            self.requests.append(recorded)
        else:
            self.background.append(recorded)

    def injected(self, recorded: Recorded) -> Canned | None:
        if not self.in_caller_thread():
            return None
        if self.fail_next:
            return Canned(
                self.fail_next.pop(0),
                {"error": {"code": "Transient", "message": "try again"}},
                {"Retry-After": self.retry_after},
            )
        return super().injected(recorded)

    def sleep(self, duration: float) -> None:
        """The retry policy's waits (in the caller's thread), recorded instead of slept.

        The SDK's LRO pollers run in their own threads and sleep for real (the canned
        operations say Retry-After: 3600), so they stay idle and send nothing during a test.
        """
        if self.in_caller_thread():
            self.sleeps.append(duration)
        else:
            time.sleep(duration)

    def _route(self, rec: Recorded) -> Canned:
        for method, pattern, handler in self.routes:
            match = pattern.search(rec.path)
            if method == rec.method and match:
                return handler(rec, match)
        return not_found(f"{rec.method} {rec.path} not found")

    # -- helpers for tests -------------------------------------------------------------------

    def add_endpoint(
        self,
        name: str,
        traffic: dict[str, int] | None = None,
        mirror: dict[str, int] | None = None,
        compute: str | None = None,
    ) -> None:
        self.endpoints[name] = endpoint_body(name, traffic, mirror, compute)

    def add_deployment(
        self, endpoint: str, name: str, model: str, version: str, state: str = "Succeeded"
    ) -> None:
        self.deployments[(endpoint, name)] = deployment_body(endpoint, name, model, version, state)

    # -- canned answers ----------------------------------------------------------------------

    def _get_dep(self, rec: Recorded, m: re.Match[str]) -> Canned:
        found = self.deployments.get((m["ep"], m["dep"]))
        return Canned(200, found) if found else not_found(f"deployment {m['dep']} not found")

    def _put_dep(self, rec: Recorded, m: re.Match[str]) -> Canned:
        answer = copy.deepcopy(rec.body)
        answer.update(id=f"{WS_ID}/onlineEndpoints/{m['ep']}/deployments/{m['dep']}", name=m["dep"])
        answer["properties"]["provisioningState"] = "Creating"
        answer["properties"].setdefault("scaleSettings", {"scaleType": "Default"})
        if answer["properties"].get("endpointComputeType") == "Kubernetes":
            # Azure ML answers with the resources of the compute's instance type (the SDK's
            # get() of a Kubernetes deployment reads them unconditionally).
            answer["properties"].setdefault("containerResourceRequirements", K8S_RESOURCES)
        self.deployments[(m["ep"], m["dep"])] = answer
        op = f"https://management.azure.com{WS_ID}/operations/dep-{m['dep']}?api-version=2023-04-01-preview"
        return Canned(201, answer, {"Azure-AsyncOperation": op, "Retry-After": "3600"})

    def finish_updates(self) -> None:
        """Every endpoint update the SDK started has finished (provisioning Succeeded)."""
        for body in self.endpoints.values():
            body["properties"]["provisioningState"] = "Succeeded"

    def _delete_dep(self, rec: Recorded, m: re.Match[str]) -> Canned:
        found = self.deployments.get((m["ep"], m["dep"]))
        if not found:
            return Canned(204)
        endpoint = self.endpoints.get(m["ep"], {}).get("properties", {})
        # As Azure ML: no delete while the endpoint updates, nor of a deployment with traffic.
        if endpoint.get("provisioningState") != "Succeeded":
            message = f"endpoint {m['ep']} is {endpoint.get('provisioningState')}"
            return Canned(409, {"error": {"code": "Conflict", "message": message}})
        if endpoint.get("traffic", {}).get(m["dep"], 0) > 0:
            message = f"deployment {m['dep']} has traffic; set it to 0 before deleting"
            return Canned(400, {"error": {"code": "BadArgument", "message": message}})
        found["properties"]["provisioningState"] = "Deleting"
        op = f"https://management.azure.com{WS_ID}/operations/del-{m['dep']}?api-version=2023-04-01-preview"
        return Canned(202, None, {"Location": op, "Retry-After": "3600"})

    def _get_ep(self, rec: Recorded, m: re.Match[str]) -> Canned:
        found = self.endpoints.get(m["ep"])
        if not found:
            return not_found(f"endpoint {m['ep']} not found")
        return Canned(200, copy.deepcopy(found))

    def _put_ep(self, rec: Recorded, m: re.Match[str]) -> Canned:
        answer = copy.deepcopy(rec.body)
        answer.update(id=f"{WS_ID}/onlineEndpoints/{m['ep']}", name=m["ep"])
        answer["properties"]["provisioningState"] = "Updating"
        self.endpoints[m["ep"]] = answer
        op = f"https://management.azure.com{WS_ID}/operations/ep-{m['ep']}?api-version=2023-04-01-preview"
        return Canned(200, answer, {"Azure-AsyncOperation": op, "Retry-After": "3600"})

    def _get_ws(self, rec: Recorded, m: re.Match[str]) -> Canned:
        return Canned(200, {"id": WS_ID, "name": WS, "location": LOCATION, "properties": {}})

    def _put_data(self, rec: Recorded, m: re.Match[str]) -> Canned:
        answer = copy.deepcopy(rec.body) or {}
        answer.update(id=f"{WS_ID}/data/{m['name']}/versions/{m['ver']}", name=m["ver"])
        return Canned(200, answer)

    def _get_data(self, rec: Recorded, m: re.Match[str]) -> Canned:
        return not_found(f"data {m['name']} not found")

    def _get_datastore(self, rec: Recorded, m: re.Match[str]) -> Canned:
        datastore = {
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
        return Canned(200, datastore)

    def _get_operation(self, rec: Recorded, m: re.Match[str]) -> Canned:
        return Canned(200, {"status": "InProgress"}, {"Retry-After": "3600"})

    def _list_deps(self, rec: Recorded, m: re.Match[str]) -> Canned:
        found = [body for (ep, _), body in self.deployments.items() if ep == m["ep"]]
        return Canned(200, {"value": copy.deepcopy(found)})
