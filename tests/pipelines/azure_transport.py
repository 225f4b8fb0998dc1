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
