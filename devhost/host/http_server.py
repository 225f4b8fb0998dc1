"""HTTP triggers on a starlette app, with the routes, methods and keys `func start` gives."""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from devhost.host.discovery import RETURN
from devhost.host.invoke import Invoker

log = logging.getLogger("devhost")

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"
ANONYMOUS = "anonymous"
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
}
_PARAMETER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class RouteTemplate:
    """An ASP.NET-style route template: `models/{model}`, `{id:int}`, `{name?}`, `{*rest}`."""

    template: str
    regex: re.Pattern[str]
    parameters: tuple[str, ...]
    precedence: tuple[int, ...]

    @classmethod
    def compile(cls, template: str) -> RouteTemplate:
        pattern, parameters, precedence = "", [], []
        for segment in template.strip("/").split("/"):
            segment_regex, optional, rank = _segment(segment, parameters)
            precedence.append(rank)
            pattern += f"(?:/{segment_regex})?" if optional else f"/{segment_regex}"
        regex = re.compile(f"^{pattern}/?$", re.IGNORECASE)
        return cls(template, regex, tuple(parameters), tuple(precedence))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        return {
            name: value
            for index, name in enumerate(self.parameters)
            if (value := found.group(f"p{index}")) is not None
        }


def _segment(segment: str, parameters: list[str]) -> tuple[str, bool, int]:
    """(regex, optional, rank): rank orders routes as ASP.NET does (literals first)."""
    if not _PARAMETER.search(segment):
        return re.escape(segment), False, 0
    regex, optional, rank, position = "", False, 1, 0
    for match in _PARAMETER.finditer(segment):
        regex += re.escape(segment[position : match.start()])
        position = match.end()
        body = match[1]
        catch_all = body.startswith("*")
        body = body.lstrip("*")
        optional = body.endswith("?") or "=" in body
        body = body.rstrip("?").split("=", 1)[0]
        name, _, constraint = body.partition(":")
        group = f"p{len(parameters)}"
        parameters.append(name)
        value_regex = ".*" if catch_all else _CONSTRAINTS.get(constraint.lower(), "[^/]+")
        regex += f"(?P<{group}>{value_regex})"
        rank = 4 if catch_all else 3 if optional else 1 if constraint else 2
    regex += re.escape(segment[position:])
    return regex, optional, rank


@dataclass(frozen=True)
class HttpFunction:
    invoker: Invoker
    route: RouteTemplate
    methods: frozenset[str]
    auth_level: str

    @classmethod
    def from_invoker(cls, invoker: Invoker) -> HttpFunction:
        trigger = invoker.spec.trigger
        methods = trigger.get("methods") or ALL_METHODS
        return cls(
            invoker=invoker,
            route=RouteTemplate.compile(trigger.get("route") or invoker.spec.name),
            methods=frozenset(method.upper() for method in methods),
            auth_level=str(trigger.get("authLevel", "FUNCTION")).lower(),
        )

    @property
    def response_binding(self) -> str:
        names = [b["name"] for b in self.invoker.spec.outputs if b["type"] == "http"]
        return names[0] if names else RETURN


def sort_by_precedence(functions: list[HttpFunction]) -> list[HttpFunction]:
    return sorted(functions, key=lambda function: function.route.precedence)


def key_matches(request: Request, function_key: str) -> bool:
    given = request.query_params.get(KEY_QUERY) or request.headers.get(KEY_HEADER) or ""
    return hmac.compare_digest(given.encode(), function_key.encode())


async def build_request(request: Request, route_params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=dict(request.headers),
        params=dict(request.query_params),
        route_params=route_params,
        body=await request.body(),
    )


def to_response(value: Any) -> Response:
    """What the function returned (or set on its HTTP output) as a starlette Response."""
    if value is None:
        return Response(status_code=204)
    if isinstance(value, func.HttpResponse):
        headers = dict(value.headers)
        if not any(name.lower() == "content-type" for name in headers) and value.mimetype:
            charset = f"; charset={value.charset}" if value.charset else ""
            headers["content-type"] = f"{value.mimetype}{charset}"
        return Response(value.get_body(), status_code=value.status_code, headers=headers)
    if isinstance(value, bytes):
        return Response(value, media_type="application/octet-stream")
    if isinstance(value, str):
        return PlainTextResponse(value)
    return Response(json.dumps(value), media_type="application/json")


def internal_error() -> Response:
    return PlainTextResponse("Internal Server Error", status_code=500)


class HttpDispatcher:
    """Routes `/<prefix>/<route>` to a function, checks the key, converts both ways."""

    def __init__(self, functions: list[HttpFunction], route_prefix: str, function_key: str):
        self._functions = sort_by_precedence(functions)
        self._prefix = "/" + route_prefix.strip("/") if route_prefix.strip("/") else ""
        self._key = function_key

    def _relative(self, path: str) -> str | None:
        if not self._prefix:
            return path
        lowered = path.lower()
        if lowered == self._prefix.lower() or lowered.startswith(self._prefix.lower() + "/"):
            return path[len(self._prefix) :] or "/"
        return None

    def _find(self, method: str, path: str) -> tuple[HttpFunction, dict[str, str]] | None:
        for function in self._functions:
            params = function.route.match(path)
            if params is not None and method in function.methods:
                return function, params
        return None

    async def handle(self, request: Request) -> Response:
        if request.url.path == "/":
            return PlainTextResponse("devhost: the Functions app is running\n")
        relative = self._relative(request.url.path)
        found = None if relative is None else self._find(request.method, relative)
        if found is None:
            return Response(status_code=404)  # the host answers 404 for a method mismatch too
        function, route_params = found
        if function.auth_level != ANONYMOUS and not key_matches(request, self._key):
            return Response(status_code=401)
        http_request = await build_request(request, route_params)
        try:
            result = await function.invoker.invoke_async(http_request, route_params)
        except Exception:  # logged by the invoker, with the traceback
            return internal_error()
        try:
            return to_response(result.output(function.response_binding))
        except Exception:
            log.exception("%s: its result is no HTTP response", function.invoker.spec.name)
            return internal_error()


def build_http_app(dispatcher: HttpDispatcher) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", dispatcher.handle, methods=list(ALL_METHODS))])
