"""A recording azure-core HttpTransport and a fake credential, for the real azure-ai-ml SDK.

The transport is passed to `MLClient` as `transport=`: the real SDK builds and sends its real
REST requests; the transport records each one (method, URL, headers, JSON body) and answers
with a `Canned` response from a responder. Nothing leaves the process. Tests then read what
was really sent.

`faults` are answered first, before the responder: each (predicate, canned) pair answers the
first request it matches, once, in order — how tests inject 429/503 sequences that azure-core's
retry policy should retry, or refusals it should not.

The resource-specific responders live next to their adapters' tests, in tests/adapters/:
`azureml_endpoint_replay` (online endpoints and deployments) and `azureml_jobs_replay`
(pipeline jobs).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpResponse, HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict


@dataclass
class Recorded:
    """One request as the SDK sent it."""

    method: str
    url: str
    path: str  # what the transport routes on: see `RecordingTransport.path_of`
    body: Any  # parsed JSON, the raw content if it is not JSON, or None
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return self.body


@dataclass
class Canned:
    """One answer: a status, a JSON body (None: empty) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[Recorded], Canned]
Fault = tuple[Callable[[Recorded], bool], Canned]


def not_found(message: str) -> Canned:
    return Canned(404, {"error": {"code": "ResourceNotFound", "message": message}})


class RecordingTransport(HttpTransport):
    """Records every request in `requests`; answers a matching fault first, else the responder."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []

    @staticmethod
    def path_of(url: str) -> str:
        """`Recorded.path`: here the URL without its query (scheme and host kept)."""
        return url.split("?", 1)[0]

    def record(self, recorded: Recorded) -> None:
        self.requests.append(recorded)

    def injected(self, recorded: Recorded) -> Canned | None:
        """The first fault matching the request, taken off the list; None if there is none."""
        for index, (matches, canned) in enumerate(self.faults):
            if matches(recorded):
                del self.faults[index]
                return canned
        return None

    def sent(self, method: str, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and contains in r.path]

    # -- the transport -----------------------------------------------------------------------

    def send(self, request: Any, **kwargs: Any) -> Any:
        recorded = Recorded(
            request.method,
            request.url,
            self.path_of(request.url),
            _parsed_body(request),
            dict(request.headers),
        )
        self.record(recorded)
        canned = self.injected(recorded)
        if canned is None:
            canned = self.responder(recorded)
        return _response(request, canned)

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


def _parsed_body(request: Any) -> Any:
    raw = getattr(request, "content", None)
    if raw is None:
        raw = getattr(request, "body", None)
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


class _LegacyResponse(HttpResponse):
    """The answer to a legacy `azure.core.pipeline.transport.HttpRequest`."""

    def __init__(self, request: Any, status: int, headers: dict[str, str], content: bytes) -> None:
        super().__init__(request, None)
        self.status_code = status
        self.headers = CaseInsensitiveDict(headers)
        self.reason = _reason(status)
        self.content_type = self.headers.get("Content-Type")
        self._content = content

    def body(self) -> bytes:
        return self._content


def _reason(status: int) -> str:
    return "OK" if status < 400 else "Error"


def _response(request: Any, canned: Canned) -> Any:
    """A real azure-core response whose body is already read (what the SDK reads back)."""
    content = b"" if canned.body is None else json.dumps(canned.body).encode()
    headers = {"Content-Type": "application/json", **canned.headers}
    if not hasattr(request, "content"):
        return _LegacyResponse(request, canned.status, headers, content)
    response = HttpResponseImpl(
        request=request,
        internal_response=io.BytesIO(content),
        status_code=canned.status,
        reason=_reason(canned.status),
        content_type=headers["Content-Type"],
        headers=CaseInsensitiveDict(headers),
        stream_download_generator=None,
    )
    response._content = content  # the body, as if the stream had been read
    response._is_stream_consumed = True
    response._is_closed = True
    return response


class FakeCredential:
    """A TokenCredential handing out unsigned JWTs whose audience is the requested scope.

    No identity service is called. (azure-ai-ml decodes the Azure ML token of a pipeline
    submission to check its audience, so an opaque string would not do.)
    """

    EXPIRES_ON = 4102444800  # 2100-01-01

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token(scopes), self.EXPIRES_ON)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token(scopes), self.EXPIRES_ON)

    def _token(self, scopes: tuple[str, ...]) -> str:
        self.scopes.extend(scopes)
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        header = {"alg": "none", "typ": "JWT"}
        claims = {
            "aud": audience,
            "tid": "00000000-0000-0000-0000-000000000001",
            "exp": self.EXPIRES_ON,
        }
        return ".".join(_b64(part) for part in (header, claims)) + ".c2ln"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
