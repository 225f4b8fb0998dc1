"""An azure-core HttpTransport that records every request and answers from a responder.

It is passed to MLClient as `transport=`: the real azure-ai-ml SDK builds and sends its
real REST requests (URL, method, JSON body), and the responder answers the way the Azure
ML service does (canned JSON for each route). Nothing leaves the process.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpResponse, HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict


@dataclass
class Recorded:
    method: str
    url: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]


@dataclass
class Canned:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[Recorded], Canned]


class _LegacyResponse(HttpResponse):
    def __init__(self, request: Any, canned: Canned, content: bytes) -> None:
        super().__init__(request, None)
        self.status_code = canned.status
        self.headers = CaseInsensitiveDict(canned.headers)
        self.reason = "canned"
        self.content_type = self.headers.get("Content-Type")
        self._content = content

    def body(self) -> bytes:
        return self._content


class RecordingTransport(HttpTransport):
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[Recorded] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        raw = request.content if hasattr(request, "content") else request.body
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode("utf-8")
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except (TypeError, ValueError):
                body = raw
        recorded = Recorded(request.method, request.url, dict(request.headers), body)
        self.requests.append(recorded)
        canned = self.responder(recorded)
        content = b"" if canned.body is None else json.dumps(canned.body).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"} | canned.headers
        canned = Canned(canned.status, canned.body, headers)
        if hasattr(request, "content"):  # azure.core.rest.HttpRequest
            response = HttpResponseImpl(
                request=request,
                internal_response=None,
                status_code=canned.status,
                reason="canned",
                content_type=headers["Content-Type"],
                headers=CaseInsensitiveDict(headers),
                stream_download_generator=None,
            )
            response._content = content
            response._is_closed = True
            return response
        return _LegacyResponse(request, canned, content)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        pass


class FakeCredential:
    """A TokenCredential handing out unsigned JWTs whose audience is the requested scope.

    (azure-ai-ml decodes the Azure ML token of a pipeline submission to check its audience.)
    """

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        header = {"alg": "none", "typ": "JWT"}
        claims = {"aud": audience, "tid": "00000000-0000-0000-0000-000000000001", "exp": 4102444800}
        token = ".".join(_b64(part) for part in (header, claims)) + ".c2ln"
        return AccessToken(token, 4102444800)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


ARM = "https://management.azure.com"
WORKSPACE = (
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws-1"
)
RUN_HISTORY = "https://westeurope.api.azureml.ms"


class FakeAzureML:
    """Answers the Azure ML REST routes a pipeline submission and a status poll use.

    Jobs are kept by name: a PUT stores the job (echoed back with status NotStarted), a
    GET returns it or 404. `jobs_status[name]` sets what a GET reports; `job_tags[name]`
    adds tags; `run_errors[name]` is the run-history error; `faults` are answered first
    (in order) for requests matching their predicate.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_status: dict[str, str] = {}
        self.job_tags: dict[str, dict[str, str]] = {}
        self.run_errors: dict[str, dict[str, str]] = {}
        self.children: dict[str, list[dict[str, Any]]] = {}
        self.faults: list[tuple[Callable[[Recorded], bool], Canned]] = []

    def __call__(self, request: Recorded) -> Canned:
        for index, (matches, canned) in enumerate(self.faults):
            if matches(request):
                del self.faults[index]
                return canned
        url = request.path
        path = url.removeprefix(ARM).removeprefix(RUN_HISTORY)
        method = request.method
        if url == f"{ARM}{WORKSPACE}" and method == "GET":
            return Canned(200, self._workspace())
        if url == f"{RUN_HISTORY}/discovery":
            return Canned(200, {"api": RUN_HISTORY, "history": RUN_HISTORY})
        if path.startswith(f"{WORKSPACE}/computes/") and method == "GET":
            return Canned(200, self._compute(path))
        if path.startswith(f"{WORKSPACE}/codes/") and method == "GET":
            return Canned(200, self._code(path))
        if method == "PUT" and (
            path.startswith(f"{WORKSPACE}/environments/")
            or path.startswith(f"{WORKSPACE}/components/")
        ):
            return Canned(200, _echo(path, request.body))
        if path.startswith(f"{WORKSPACE}/jobs/"):
            return self._job(path.rsplit("/", 1)[1], method, path, request.body)
        if "/history/v1.0" in url:
            return self._history(path)
        return _not_found(f"no canned answer for {method} {url}")

    def _job(self, name: str, method: str, path: str, body: Any) -> Canned:
        if method == "PUT":
            stored = _echo(path, body)
            stored["type"] = "Microsoft.MachineLearningServices/workspaces/jobs"
            self.jobs[name] = stored
            self.job_status.setdefault(name, "NotStarted")
        if name not in self.jobs:
            return _not_found(f"Job {name} not found")
        job = json.loads(json.dumps(self.jobs[name]))
        job["properties"]["status"] = self.job_status[name]
        job["properties"]["tags"] = {
            **job["properties"].get("tags", {}),
            **self.job_tags.get(name, {}),
        }
        return Canned(201 if method == "PUT" else 200, job)

    def _history(self, path: str) -> Canned:
        parts = path.split("/runs/", 1)[1].split("/")
        name, what = parts[0], parts[1] if len(parts) > 1 else ""
        if what == "details":
            body: dict[str, Any] = {"runId": name, "status": self.job_status.get(name)}
            if name in self.run_errors:
                body["error"] = {"error": self.run_errors[name]}
            return Canned(200, body)
        if what == "children":
            return Canned(200, {"value": self.children.get(name, [])})
        return _not_found(f"no run {name}")

    @staticmethod
    def _workspace() -> dict[str, Any]:
        return {
            "id": WORKSPACE,
            "name": "ws-1",
            "location": "westeurope",
            "properties": {"discoveryUrl": f"{RUN_HISTORY}/discovery"},
        }

    @staticmethod
    def _compute(path: str) -> dict[str, Any]:
        return {
            "id": path,
            "name": path.rsplit("/", 1)[1],
            "location": "westeurope",
            "properties": {
                "computeType": "AmlCompute",
                "provisioningState": "Succeeded",
                "properties": {"vmSize": "STANDARD_DS3_V2"},
            },
        }

    @staticmethod
    def _code(path: str) -> dict[str, Any]:
        version = {
            "properties": {
                "codeUri": "https://acct.blob.core.windows.net/code/abc",
                "isAnonymous": True,
            }
        }
        if path.endswith("/versions"):  # list by content hash: the code is already uploaded
            return {"value": [{"id": f"{path}/1", "name": "1", **version}]}
        return {"id": path, "name": path.rsplit("/", 1)[1], **version}


def _echo(path: str, body: Any) -> dict[str, Any]:
    echoed = dict(body or {})
    echoed["id"] = path
    echoed["name"] = path.rstrip("/").rsplit("/", 1)[1]
    return echoed


def _not_found(message: str) -> Canned:
    return Canned(404, {"error": {"code": "ResourceNotFound", "message": message}})
