"""Helpers for the bad-input tests: calling trigger functions as the host does, counting
dead letters and state writes, and small fakes of our own ports."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.storage.blob import BlobServiceClient
from hypothesis import HealthCheck, settings

from adapters.azurite import Azurite
from adapters.blob_state import ensure_container
from adapters.dead_letters import BlobDeadLetters
from domain.metrics import LiveMetrics, OfflineMetrics
from orchestrator.aggregate import ModelAggregate
from orchestrator.bootstrap import DEAD_LETTER_CONTAINER, Runtime, set_runtime
from orchestrator.ports import DeploymentStatus, TrainingBackendError
from tests.harness import RecordingTrainingBackend

# Derandomized and without the example database: the same examples on every run, so the
# counts in docs/reliability-notes.md are reproducible.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz(max_examples: int) -> settings:
    return settings(FUZZ, max_examples=max_examples)


# JSON that the parser itself cannot take: an integer literal past Python's 4300-digit limit
# (ValueError, not JSONDecodeError) and nesting past the recursion limit (RecursionError).
PATHOLOGICAL_JSON: tuple[bytes, ...] = (
    b"1" * 5000,
    b'{"model": ' + b"9" * 5000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b'{"model": NaN, "reason": Infinity}',
    b'"\ud800"',
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b"\xff\xfe{\x00}\x00",  # UTF-16
)


def user_function(function: Any) -> Callable[..., Any]:
    """The plain function behind a blueprint's FunctionBuilder (or the function itself)."""
    inner = getattr(function, "_function", None)
    return inner.get_user_function() if inner is not None else function


@contextmanager
def installed(runtime: Runtime) -> Iterator[Runtime]:
    set_runtime(runtime)
    try:
        yield runtime
    finally:
        set_runtime(None)


def http_request(
    method: str,
    url: str,
    body: bytes,
    route_params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> func.HttpRequest:
    return func.HttpRequest(
        method, url, body=body, route_params=route_params or {}, headers=headers or {}
    )


class TrainingBackend(RecordingTrainingBackend):
    """Recording backend that, like the real ones, refuses an unknown job permanently."""

    def status(self, job_id: str) -> Any:
        if job_id not in self.states:
            raise TrainingBackendError(f"job {job_id!r} not found")
        return super().status(job_id)


@dataclass
class DeadLetterSpy:
    """Wraps a dead-letter store: the real blob is written, the call is recorded."""

    inner: Any = field(repr=False)
    calls: list[tuple[str, str]] = field(default_factory=list, repr=False)
    names: list[str] = field(default_factory=list, repr=False)

    def record(
        self, source: str, reason: str, body: bytes | str, properties: dict[str, Any] | None = None
    ) -> str:
        self.calls.append((source, reason))
        name = str(self.inner.record(source, reason, body, properties))
        self.names.append(name)
        return name

    def stored(self, runtime: Runtime) -> list[dict[str, Any]]:
        """The records this spy saw, as stored (the container is shared by every test)."""
        container = runtime.blob_service.get_container_client(DEAD_LETTER_CONTAINER)
        return [json.loads(container.download_blob(name).readall()) for name in self.names]


def dead_letter_spy(azurite: Azurite) -> DeadLetterSpy:
    """A spy on the real dead-letter store, in the container every runtime on this Azurite
    writes to; give it to the runtime as `make_runtime(..., dead_letters=spy)`."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = ensure_container(service.get_container_client(DEAD_LETTER_CONTAINER))
    return DeadLetterSpy(BlobDeadLetters(container))


@dataclass
class SaveSpy:
    """Records every aggregate the state store writes (the store's update calls save)."""

    saves: list[tuple[str, ModelAggregate]] = field(default_factory=list, repr=False)

    def install(self, runtime: Runtime) -> SaveSpy:
        store = runtime.ports.store
        real_save = store.save

        def save(key: str, aggregate: ModelAggregate, etag: str | None) -> str:
            result = real_save(key, aggregate, etag)
            self.saves.append((key, aggregate))
            return str(result)

        store.save = save  # type: ignore[method-assign]
        return self


def aggregate(runtime: Runtime, model: str) -> tuple[ModelAggregate, bool]:
    """The stored aggregate and whether it exists at all."""
    state, etag = runtime.ports.store.load(model)
    return state, etag is not None


class FixedMetrics:
    """MetricsReader: the candidate's offline metrics are whatever the test says."""

    def __init__(self, candidate: dict[str, float]) -> None:
        self.candidate = candidate

    def offline(
        self, model: str, candidate_version: str, champion_version: str | None
    ) -> OfflineMetrics:
        return OfflineMetrics(candidate=dict(self.candidate))

    def live(self, model: str, promotion_id: str, step: int, arms: Any) -> LiveMetrics:
        now = datetime.now(UTC)
        return LiveMetrics(window_start=now, window_end=now)


class RecordingRegistry:
    def __init__(self) -> None:
        self.tags: list[tuple[str, str, dict[str, str]]] = []

    def tag(self, model: str, version: str, tags: dict[str, str]) -> None:
        self.tags.append((model, version, dict(tags)))


class RecordingEndpoint:
    """OnlineEndpoint: deployments succeed at once; records what it was asked."""

    def __init__(self) -> None:
        self.deployed: list[str] = []
        self.splits: list[dict[str, int]] = []

    def deploy(self, model_name: str, model_version: str, deployment: str) -> str:
        self.deployed.append(deployment)
        return deployment

    def deployment_state(self, deployment: str) -> DeploymentStatus:
        return DeploymentStatus(deployment=deployment, state="succeeded")

    def set_traffic(self, traffic: dict[str, int]) -> None:
        self.splits.append(dict(traffic))

    def set_mirror(self, mirror: dict[str, int]) -> None:
        pass

    def delete(self, deployment: str) -> None:
        pass

    def traffic(self) -> dict[str, int]:
        return self.splits[-1] if self.splits else {}
