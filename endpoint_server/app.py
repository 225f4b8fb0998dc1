"""The local online endpoint server: a starlette app serving registered MLflow models.

One server holds any number of endpoints, each as its own Azure ML managed online endpoint:
its own deployments, live split, mirror, request log and feedback, addressed by its name
(the policy's `endpoint`), as Azure ML scores at `https://{endpoint}.../score`. Deployment
names are per endpoint. An endpoint comes into being on its first deployment (or a PUT) and,
like everything below, survives a restart (`endpoints/{endpoint}/` in the data dir).

Control plane (shaped like Azure ML's online endpoint API):

    GET    /endpoints                       [{"name", "traffic", "mirror_traffic", "deployments"}]
    PUT    /{endpoint}                      create it, empty (201), or 200 when it exists
    GET    /{endpoint}                      {"name", "traffic", "mirror_traffic", "deployments"}
    GET    /{endpoint}/deployments          all its deployments
    PUT    /{endpoint}/deployments/{name}   {"model_name", "model_version"}: start loading (201),
                                            or 200 when it already serves that version
    GET    /{endpoint}/deployments/{name}   {"name", "model_name", "model_version",
                                             "provisioningState", "error"}; 404 when missing
    DELETE /{endpoint}/deployments/{name}   204; 404 when missing; 409 while it takes traffic
    GET    /{endpoint}/traffic              {"traffic": {...}, "mirror_traffic": {...}}
    PUT    /{endpoint}/traffic              {"traffic": {...}} (absolute; validated)
    PUT    /{endpoint}/mirror               {"mirror_traffic": {...}} (absolute; validated)

Data plane:

    POST   /{endpoint}/score                MLflow scoring payload; routed by key (see routing);
                                            503 NoLiveTraffic when nothing serves (which endpoint,
                                            its deployments and why), DeploymentNotReady
    POST   /{endpoint}/feedback             {"request_id", "label"} or {"feedback": [...]}
    POST   /{endpoint}/records/flush        returns once every record so far is in SQLite
    GET    /health

An endpoint that does not exist answers 404 with ``"code": "EndpointNotFound"`` (a missing
deployment: ``"DeploymentNotFound"``), except a deployment PUT, which creates it. Endpoint
names follow Azure ML's rule (`adapters.local_endpoint.ENDPOINT_NAME`); `health` and
`endpoints` are the server's own.

Every route but /health needs the server's key, as a managed endpoint's do (its control plane
and its scoring URI): `Authorization: Bearer <key>` or `x-endpoint-key: <key>`, compared in
constant time; without it, or with another, 401.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.local_endpoint import (
    ENDPOINT_NOT_FOUND,
    endpoint_data_dir,
    endpoints_root,
    is_valid_endpoint_name,
)
from adapters.traffic_rules import live_only, mirror_after_traffic, validate_traffic
from domain.naming import is_valid_deployment_name
from endpoint_server.routing import mirror_target, route
from endpoint_server.store import RECORDS_FILE, Record, RecordStore
from orchestrator.ports import InvalidTraffic

log = logging.getLogger(__name__)

KEY_HEADER = "x-request-key"
PIN_HEADER = "azureml-model-deployment"
REQUEST_ID_HEADER = "x-request-id"
ENDPOINT_KEY_HEADER = "x-endpoint-key"  # or Authorization: Bearer <key>
MIN_KEY_LENGTH = 16
STATE_FILE = "endpoint.json"  # in each endpoint's folder
DEPLOYMENT_NOT_FOUND = "DeploymentNotFound"
NO_LIVE_TRAFFIC = "NoLiveTraffic"  # a 503: no deployment of the endpoint takes live traffic
DEPLOYMENT_NOT_READY = "DeploymentNotReady"  # a 503: the routed (or pinned) one is not ready
RESERVED_NAMES = frozenset({"health", "endpoints"})  # the server's own top-level routes


@dataclass
class Deployment:
    name: str
    model_name: str
    model_version: str
    state: str = "creating"  # creating | succeeded | failed | deleting
    error: str | None = None
    model: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "provisioningState": self.state.capitalize(),
            "error": self.error,
        }


class Conflict(Exception):
    pass


class EndpointState:
    """One endpoint: its deployments, split, mirror and request log, in its own folder.
    Thread-safe; models load on the server's shared loader."""

    def __init__(self, name: str, folder: Path, server: EndpointServerState) -> None:
        self.name = name
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = server
        self.lock = threading.RLock()
        self.deployments: dict[str, Deployment] = {}
        self.live: dict[str, int] = {}
        self.mirror: dict[str, int] = {}
        self.store = RecordStore(self.folder / RECORDS_FILE)
        self._restore()
        self._save()  # the folder names a known endpoint from now on, even with nothing in it

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {
                "name": self.name,
                "traffic": dict(self.live),
                "mirror_traffic": dict(self.mirror),
                "deployments": sorted(self.deployments),
            }

    # -- persistence of the control plane (so a restarted server serves the same split) ---

    def _restore(self) -> None:
        path = self.folder / STATE_FILE
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        # The maps first: each deploy below saves, and must not save them away.
        self.live = {k: int(v) for k, v in saved.get("traffic", {}).items()}
        self.mirror = {k: int(v) for k, v in saved.get("mirror_traffic", {}).items()}
        for name, spec in saved.get("deployments", {}).items():
            self.deploy(name, spec["model_name"], spec["model_version"])

    def _save(self) -> None:
        saved = {
            "endpoint": self.name,
            "deployments": {
                d.name: {"model_name": d.model_name, "model_version": d.model_version}
                for d in self.deployments.values()
            },
            "traffic": self.live,
            "mirror_traffic": self.mirror,
        }
        tmp = self.folder / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(saved, indent=2))
        tmp.replace(self.folder / STATE_FILE)

    # -- deployments -------------------------------------------------------------------------

    def deploy(self, name: str, model_name: str, model_version: str) -> tuple[Deployment, bool]:
        """Start loading; returns (deployment, created). Same version, not failed: no-op."""
        with self.lock:
            current = self.deployments.get(name)
            if (
                current is not None
                and (current.model_name, current.model_version) == (model_name, model_version)
                and current.state in ("creating", "succeeded")
            ):
                return current, False
            deployment = Deployment(name, model_name, model_version)
            self.deployments[name] = deployment
            self._save()
        self.server.load_later(self, deployment)
        return deployment, True

    def _load(self, deployment: Deployment) -> None:
        try:
            import mlflow.artifacts
            import mlflow.pyfunc
            from mlflow.tracking import MlflowClient
            from mlflow.utils.file_utils import local_file_uri_to_path

            server = self.server
            # Resolve through this server's registry (not the process-wide MLflow settings):
            # the same model mlflow.pyfunc.load_model("models:/name/version") would load.
            client = MlflowClient(server.tracking_uri, server.registry_uri)
            source = client.get_model_version_download_uri(
                deployment.model_name, deployment.model_version
            )
            if source.startswith("file:") or "://" not in source:
                local = local_file_uri_to_path(source)
            else:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=source,
                    dst_path=str(self.folder / "models" / deployment.name / uuid.uuid4().hex),
                    tracking_uri=server.tracking_uri,
                    registry_uri=server.registry_uri,
                )
            model = mlflow.pyfunc.load_model(local)
        except Exception as exc:  # a model that cannot load fails the deployment, with why
            log.warning("%s: deployment %s failed to load: %s", self.name, deployment.name, exc)
            with self.lock:
                if self.deployments.get(deployment.name) is deployment:
                    deployment.state = "failed"
                    deployment.error = f"{type(exc).__name__}: {exc}"
            return
        with self.lock:
            if self.deployments.get(deployment.name) is deployment:
                deployment.model = model
                deployment.state = "succeeded"

    def delete(self, name: str) -> bool:
        with self.lock:
            if name not in self.deployments:
                return False
            others_live = any(weight > 0 for other, weight in self.live.items() if other != name)
            if (self.live.get(name, 0) > 0 and others_live) or self.mirror.get(name, 0) > 0:
                raise Conflict(f"deployment {name} takes traffic; move the traffic first")
            # The only deployment serving may go (a first model rolled back): nothing serves.
            self.deployments.pop(name).state = "deleting"
            self.live.pop(name, None)
            self.mirror.pop(name, None)
            self._save()
            return True

    # -- traffic -----------------------------------------------------------------------------

    def _require_ready(self, weights: dict[str, int], what: str) -> None:
        for name, weight in weights.items():
            deployment = self.deployments[name]
            if weight > 0 and deployment.state != "succeeded":
                raise Conflict(
                    f"cannot send {what} to {name}: it is {deployment.state}, not succeeded"
                )

    def set_traffic(self, traffic: dict[str, int]) -> None:
        with self.lock:
            mirror = mirror_after_traffic(traffic, self.mirror)
            validate_traffic(traffic, mirror, existing=self.deployments.keys())
            self._require_ready(traffic, "live traffic")
            self.live = live_only(traffic)
            self.mirror = mirror
            self._save()

    def set_mirror(self, mirror: dict[str, int]) -> None:
        with self.lock:
            if live_only(mirror) and not self.live:
                raise InvalidTraffic("cannot mirror: the endpoint takes no live traffic")
            validate_traffic(self.live or {}, mirror, existing=self.deployments.keys())
            self._require_ready(mirror, "mirrored traffic")
            self.mirror = live_only(mirror)
            self._save()

    def close(self) -> None:
        self.store.close()


class EndpointServerState:
    """Every endpoint the server holds, by name (each in `endpoints/{name}/` under
    `data_dir`), and the loader their models load on. Thread-safe."""

    def __init__(
        self, data_dir: Path | str, tracking_uri: str, registry_uri: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.lock = threading.Lock()
        self.endpoints: dict[str, EndpointState] = {}
        self._loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="endpoint-load")
        legacy = self.data_dir / STATE_FILE
        if legacy.exists():
            log.warning(
                "%s is the state of a single-endpoint server and names no endpoint: ignored "
                "(endpoints now live in %s/)",
                legacy,
                endpoints_root(self.data_dir),
            )
        root = endpoints_root(self.data_dir)
        for saved in sorted(root.glob(f"*/{STATE_FILE}")) if root.is_dir() else []:
            name = saved.parent.name
            if is_valid_endpoint_name(name) and name not in RESERVED_NAMES:
                self.endpoints[name] = EndpointState(name, saved.parent, self)

    def get(self, name: str) -> EndpointState | None:
        with self.lock:
            return self.endpoints.get(name)

    def ensure(self, name: str) -> tuple[EndpointState, bool]:
        """The endpoint `name` (a valid name), created when missing; returns (it, created)."""
        with self.lock:
            existing = self.endpoints.get(name)
            if existing is not None:
                return existing, False
            created = EndpointState(name, endpoint_data_dir(self.data_dir, name), self)
            self.endpoints[name] = created
            return created, True

    def all(self) -> list[EndpointState]:
        with self.lock:
            return [self.endpoints[name] for name in sorted(self.endpoints)]

    def load_later(self, endpoint: EndpointState, deployment: Deployment) -> None:
        self._loader.submit(endpoint._load, deployment)

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
        for endpoint in self.all():
            endpoint.close()


# -- scoring ------------------------------------------------------------------------------------


def to_frame(payload: Any) -> Any:
    """An MLflow/Azure ML scoring payload as a pandas DataFrame."""
    import pandas as pd

    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    data = payload.get(
        "input_data", payload.get("dataframe_split", payload.get("dataframe_records"))
    )
    if data is None:
        raise ValueError("expected 'input_data', 'dataframe_split' or 'dataframe_records'")
    if isinstance(data, dict):
        return pd.DataFrame(data["data"], columns=data.get("columns"), index=data.get("index"))
    if isinstance(data, list):
        return pd.DataFrame(data)
    raise ValueError("the input must be a split-oriented object or a list of rows")


def to_json(predictions: Any) -> Any:
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        return predictions.to_dict(orient="records")
    if hasattr(predictions, "tolist"):
        return predictions.tolist()
    return predictions


def _predict(deployment: Deployment, frame: Any) -> Any:
    return to_json(deployment.model.predict(frame))


def presented_key(request: Request) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `x-endpoint-key`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get(ENDPOINT_KEY_HEADER)


Handler = Callable[[Request], Awaitable[Response]]
OnEndpoint = Callable[[Request, EndpointState], Awaitable[Response]]


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    body = {"error": message} if code is None else {"error": message, "code": code}
    return JSONResponse(body, status_code=status)


def nothing_serves(endpoint: EndpointState) -> JSONResponse:
    """The 503 of a score that no deployment takes: which endpoint, what it has and why none
    of it serves, so a caller early (before a first model's promotion sets traffic) or after
    a first model's rollback knows it is not their request."""
    with endpoint.lock:
        deployments = [
            {"name": d.name, "model_version": d.model_version, "state": d.state}
            for d in endpoint.deployments.values()
        ]
        traffic = dict(endpoint.live)
    if not deployments:
        why = "it has no deployment yet"
    else:
        names = ", ".join(f"{d['name']} (v{d['model_version']}, {d['state']})" for d in deployments)
        why = f"none of its deployments takes traffic: {names}"
    return JSONResponse(
        {
            "error": f"nothing serves on endpoint {endpoint.name} yet: {why}",
            "code": NO_LIVE_TRAFFIC,
            "endpoint": endpoint.name,
            "traffic": traffic,
            "deployments": deployments,
            "hint": "a model takes traffic once its promotion has its deployment ready and "
            "reaches the canary (a first model: production); `python -m devhost.cli status "
            "<model>` shows where it is. A first model rolled back leaves nothing serving",
        },
        status_code=503,
    )


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an endpoint, or None."""
    if name in RESERVED_NAMES:
        return f"{name!r} is one of the server's own routes, not an endpoint name"
    if not is_valid_endpoint_name(name):
        return (
            f"{name!r} is not a valid endpoint name "
            "(3 to 32 characters: a letter, then letters, digits and '-')"
        )
    return None


def create_app(state: EndpointServerState, key: str) -> Starlette:
    """The ASGI app over `state` (the caller owns `state` and closes it); every route but
    /health needs `key`."""
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"the endpoint key must be at least {MIN_KEY_LENGTH} characters")
    expected = key.encode()

    def keyed(handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            presented = presented_key(request)
            if presented is None or not hmac.compare_digest(presented.encode(), expected):
                return JSONResponse(
                    {"error": "missing or wrong endpoint key"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="local-endpoint"'},
                )
            return await handler(request)

        return checked

    def existing(handler: OnEndpoint, why_missing: str = "") -> Handler:
        """`handler` on the endpoint the path names; 404 when there is no such endpoint (its
        message ends with `why_missing`)."""

        async def on_endpoint(request: Request) -> Response:
            name = request.path_params["endpoint"]
            endpoint = state.get(name)
            if endpoint is None:
                return error(404, f"endpoint {name} not found{why_missing}", ENDPOINT_NOT_FOUND)
            return await handler(request, endpoint)

        return keyed(on_endpoint)

    async def list_endpoints(request: Request) -> Response:
        return JSONResponse([endpoint.describe() for endpoint in state.all()])

    async def put_endpoint(request: Request) -> Response:
        name = request.path_params["endpoint"]
        problem = name_problem(name)
        if problem:
            return error(400, problem)
        endpoint, created = await run_in_threadpool(state.ensure, name)
        return JSONResponse(endpoint.describe(), status_code=201 if created else 200)

    async def get_endpoint(request: Request, endpoint: EndpointState) -> Response:
        return JSONResponse(endpoint.describe())

    async def list_deployments(request: Request, endpoint: EndpointState) -> Response:
        with endpoint.lock:
            return JSONResponse([d.describe() for d in endpoint.deployments.values()])

    async def put_deployment(request: Request) -> Response:
        endpoint_name, name = request.path_params["endpoint"], request.path_params["name"]
        problem = name_problem(endpoint_name)
        if problem:
            return error(400, problem)
        if not is_valid_deployment_name(name):
            return error(400, f"{name!r} is not a valid deployment name")
        try:
            body = await request.json()
            model_name, model_version = str(body["model_name"]), str(body["model_version"])
        except (ValueError, KeyError, TypeError):
            return error(400, "expected a JSON body with model_name and model_version")
        # The endpoint comes into being on its first deployment, as the policy names it.
        endpoint, _ = await run_in_threadpool(state.ensure, endpoint_name)
        deployment, created = endpoint.deploy(name, model_name, model_version)
        return JSONResponse(deployment.describe(), status_code=201 if created else 200)

    async def get_deployment(request: Request, endpoint: EndpointState) -> Response:
        with endpoint.lock:
            deployment = endpoint.deployments.get(request.path_params["name"])
            if deployment is None:
                return error(404, "deployment not found", DEPLOYMENT_NOT_FOUND)
            return JSONResponse(deployment.describe())

    async def delete_deployment(request: Request, endpoint: EndpointState) -> Response:
        try:
            deleted = endpoint.delete(request.path_params["name"])
        except Conflict as exc:
            return error(409, str(exc))
        if not deleted:
            return error(404, "deployment not found", DEPLOYMENT_NOT_FOUND)
        return Response(status_code=204)

    def maps(endpoint: EndpointState) -> JSONResponse:
        with endpoint.lock:
            return JSONResponse(
                {"traffic": dict(endpoint.live), "mirror_traffic": dict(endpoint.mirror)}
            )

    async def get_traffic(request: Request, endpoint: EndpointState) -> Response:
        return maps(endpoint)

    async def put_traffic(request: Request, endpoint: EndpointState) -> Response:
        try:
            body = await request.json()
            if "traffic" in body:
                endpoint.set_traffic(body["traffic"])
            elif "mirror_traffic" in body:
                endpoint.set_mirror(body["mirror_traffic"])
            else:
                return error(400, "expected 'traffic' or 'mirror_traffic'")
        except InvalidTraffic as exc:
            return error(400, exc.reason)
        except Conflict as exc:
            return error(409, str(exc))
        except (ValueError, TypeError, AttributeError):
            return error(400, "expected a JSON object")
        return maps(endpoint)

    async def put_mirror(request: Request, endpoint: EndpointState) -> Response:
        try:
            body = await request.json()
            endpoint.set_mirror(body["mirror_traffic"])
        except InvalidTraffic as exc:
            return error(400, exc.reason)
        except Conflict as exc:
            return error(409, str(exc))
        except (ValueError, TypeError, KeyError, AttributeError):
            return error(400, "expected a JSON body with mirror_traffic")
        return maps(endpoint)

    async def score(request: Request, endpoint: EndpointState) -> Response:
        started = time.perf_counter()
        ts = time.time()
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            payload = await request.json()
        except ValueError:
            return error(400, "the body is not JSON")
        key = request.headers.get(KEY_HEADER)
        if key is None and isinstance(payload, dict) and payload.get("request_key") is not None:
            key = str(payload["request_key"])
        pin = request.headers.get(PIN_HEADER)
        with endpoint.lock:
            if pin:
                name: str | None = pin
            else:
                name = route(key if key is not None else request_id, endpoint.live)
            deployment = endpoint.deployments.get(name) if name else None
            shadow_name = mirror_target(key or request_id, endpoint.mirror) if not pin else None
            shadow = endpoint.deployments.get(shadow_name) if shadow_name else None
        if name is None:
            return nothing_serves(endpoint)
        if deployment is None:
            return error(404, f"deployment {name} not found", DEPLOYMENT_NOT_FOUND)
        headers = {PIN_HEADER: deployment.name, REQUEST_ID_HEADER: request_id}

        def finish(status: int, outputs: Any, err: str | None) -> None:
            endpoint.store.record(
                Record(
                    request_id=request_id,
                    request_key=key,
                    deployment=deployment.name,
                    model_version=deployment.model_version,
                    ts=ts,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    inputs=payload,
                    outputs=outputs,
                    status=status,
                    error=err,
                )
            )

        if deployment.state != "succeeded" or deployment.model is None:
            message = (
                f"deployment {deployment.name} of endpoint {endpoint.name} is {deployment.state}"
            )
            finish(503, None, message)
            return JSONResponse(
                {
                    "error": message,
                    "code": DEPLOYMENT_NOT_READY,
                    "endpoint": endpoint.name,
                    "deployment": deployment.name,
                },
                status_code=503,
                headers=headers,
            )
        try:
            frame = to_frame(payload)
        except (ValueError, KeyError, TypeError) as exc:
            finish(400, None, str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400, headers=headers)
        try:
            outputs = await run_in_threadpool(_predict, deployment, frame)
        except Exception as exc:  # a scoring error is the deployment's failure: a 500
            finish(500, None, f"{type(exc).__name__}: {exc}")
            return JSONResponse(
                {"error": f"scoring failed: {exc}"}, status_code=500, headers=headers
            )
        finish(200, outputs, None)
        task = None
        if shadow is not None and shadow.state == "succeeded" and shadow.model is not None:
            task = BackgroundTask(_score_shadow, endpoint, shadow, frame, payload, request_id, key)
        return JSONResponse(outputs, headers=headers, background=task)

    async def feedback(request: Request, endpoint: EndpointState) -> Response:
        try:
            body = await request.json()
            items = body.get("feedback", [body])
            rows = [(str(item["request_id"]), item["label"]) for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            return error(400, "expected {request_id, label} or {feedback: [{request_id, label}]}")
        now = time.time()
        for request_id, label in rows:
            endpoint.store.feedback(request_id, label, now)
        return JSONResponse({"accepted": len(rows)}, status_code=202)

    async def flush(request: Request, endpoint: EndpointState) -> Response:
        await run_in_threadpool(endpoint.store.flush)
        return JSONResponse({"flushed": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    one = "/{endpoint}"
    deployment = one + "/deployments/{name}"
    return Starlette(
        routes=[
            # The server's own routes first: their names are refused as endpoint names.
            Route("/health", health, methods=["GET"]),
            Route("/endpoints", keyed(list_endpoints), methods=["GET"]),
            Route(one, keyed(put_endpoint), methods=["PUT"]),
            Route(one, existing(get_endpoint), methods=["GET"]),
            Route(one + "/deployments", existing(list_deployments), methods=["GET"]),
            Route(deployment, keyed(put_deployment), methods=["PUT"]),
            Route(deployment, existing(get_deployment), methods=["GET"]),
            Route(deployment, existing(delete_deployment), methods=["DELETE"]),
            Route(one + "/traffic", existing(get_traffic), methods=["GET"]),
            Route(one + "/traffic", existing(put_traffic), methods=["PUT"]),
            Route(one + "/mirror", existing(put_mirror), methods=["PUT"]),
            Route(
                one + "/score",
                existing(
                    score,
                    ": nothing serves there; an endpoint comes into being with its first "
                    "deployment (a first model's promotion past its staging gate), under the "
                    "name its policy's `endpoint` gives",
                ),
                methods=["POST"],
            ),
            Route(one + "/feedback", existing(feedback), methods=["POST"]),
            Route(one + "/records/flush", existing(flush), methods=["POST"]),
        ]
    )


async def _score_shadow(
    endpoint: EndpointState,
    shadow: Deployment,
    frame: Any,
    payload: Any,
    request_id: str,
    key: str | None,
) -> None:
    """Score the mirrored copy; the caller never sees it, the endpoint's request log does."""
    started, ts = time.perf_counter(), time.time()
    status, outputs, err = 200, None, None
    try:
        outputs = await run_in_threadpool(_predict, shadow, frame)
    except Exception as exc:
        status, err = 500, f"{type(exc).__name__}: {exc}"
    endpoint.store.record(
        Record(
            request_id=request_id,
            request_key=key,
            deployment=shadow.name,
            model_version=shadow.model_version,
            ts=ts,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            inputs=payload,
            outputs=outputs,
            status=status,
            error=err,
            mirrored=True,
        )
    )
