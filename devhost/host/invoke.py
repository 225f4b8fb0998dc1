"""Call a user function the way the Python worker does, and log one line per invocation."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions import _abc as functions_abc
from starlette.concurrency import run_in_threadpool

from devhost.host.discovery import CONTEXT, RETURN, FunctionSpec

log = logging.getLogger("devhost")

T = TypeVar("T")


def _run_coroutine(coroutine: Any) -> Any:
    """An async function's result, from a thread that may already run an event loop (then on
    a thread of its own: asyncio.run() cannot nest)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class OutValue(func.Out[T], Generic[T]):
    """What a `func.Out[...]` parameter receives."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


class _TraceContext(functions_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(functions_abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> None:
        return None


class InvocationContext(func.Context):
    """The `context` parameter: invocation id, function name and directory, trace context."""

    def __init__(
        self,
        function_name: str,
        function_directory: str,
        retry_count: int = 0,
        max_retry_count: int = 0,
    ) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local_storage = threading.local()
        self._trace_context = _TraceContext()
        self._retry_context = _RetryContext(retry_count, max_retry_count)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:
        return self._thread_local_storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> _TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> _RetryContext:
        return self._retry_context


@dataclass
class InvocationResult:
    """The return value and the values set on output bindings, by binding name."""

    return_value: Any
    outputs: dict[str, Any] = field(default_factory=dict)

    def output(self, binding_name: str) -> Any:
        return self.return_value if binding_name == RETURN else self.outputs.get(binding_name)


OutputSink = Callable[[FunctionSpec, InvocationResult, Mapping[str, str]], None]


class Invoker:
    """Builds the arguments, calls the function (sync or async), sends its outputs, logs."""

    def __init__(
        self,
        spec: FunctionSpec,
        sink: OutputSink,
        app_directory: Path,
        stopping: threading.Event | None = None,
        retry_delay_scale: float = 1.0,
    ) -> None:
        self.spec = spec
        self._sink = sink
        self._directory = str(app_directory)
        self._stopping = stopping or threading.Event()
        self._retry_delay_scale = retry_delay_scale

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def invoke_until_done(self, trigger_value: Any) -> InvocationResult:
        """Invoke until it succeeds, waiting as the retry policy's backoff says between
        attempts (an unlimited `@app.retry` on a stream: the host never moves past it).
        Stopping the host raises the last failure."""
        retry_count = 0
        while True:
            try:
                return self.invoke(trigger_value, retry_count=retry_count)
            except Exception:
                retry_count += 1
                policy = self.spec.retry
                delay = policy.delay_before(retry_count).total_seconds() if policy else 1.0
                if self._stopping.wait(delay * self._retry_delay_scale):
                    raise

    def _arguments(
        self, trigger_value: Any, retry_count: int = 0
    ) -> tuple[dict[str, Any], dict[str, OutValue]]:
        outs: dict[str, OutValue] = {
            b["name"]: OutValue() for b in self.spec.outputs if b["name"] != RETURN
        }
        arguments: dict[str, Any] = {self.spec.trigger["name"]: trigger_value, **outs}
        if self.spec.wants_context:
            max_retries = self.spec.retry.max_retry_count if self.spec.retry else 0
            arguments[CONTEXT] = InvocationContext(
                self.spec.name, self._directory, retry_count, max_retries
            )
        return arguments, outs

    def _finish(
        self, value: Any, outs: dict[str, OutValue], binding_data: Mapping[str, str]
    ) -> InvocationResult:
        result = InvocationResult(value, {name: out.get() for name, out in outs.items()})
        self._sink(self.spec, result, binding_data)
        return result

    def invoke(
        self,
        trigger_value: Any,
        binding_data: Mapping[str, str] | None = None,
        retry_count: int = 0,
    ) -> InvocationResult:
        """From a poller thread: an async function runs on its own event loop."""
        started = time.perf_counter()
        try:
            arguments, outs = self._arguments(trigger_value, retry_count)
            value = self.spec.user_function(**arguments)
            if asyncio.iscoroutine(value):
                value = _run_coroutine(value)
            result = self._finish(value, outs, binding_data or {})
        except BaseException as exc:
            self._log(started, exc)
            raise
        self._log(started, None)
        return result

    def invoke_with_retry_policy(self, trigger_value: Any) -> InvocationResult:
        """Invoke; on failure retry as the function's `@app.retry` policy says (in memory,
        as the host does for timer and Event Hubs triggers). Stopping the host ends retries.
        An unlimited policy (-1) is not retried here: the caller keeps the input instead."""
        policy = self.spec.retry
        retry_count = 0
        while True:
            try:
                return self.invoke(trigger_value, retry_count=retry_count)
            except Exception:
                if policy is None or retry_count >= policy.max_retry_count:
                    raise
                retry_count += 1
                delay = policy.delay_before(retry_count).total_seconds()
                delay *= self._retry_delay_scale
                log.info("%s: retry %d of %d in %.1f s", self.spec.name, retry_count,
                         policy.max_retry_count, delay)  # fmt: skip
                if self._stopping.wait(delay):
                    raise

    async def invoke_async(
        self, trigger_value: Any, binding_data: Mapping[str, str] | None = None
    ) -> InvocationResult:
        """From the HTTP server: async functions on its loop, sync ones in the thread pool."""
        started = time.perf_counter()
        try:
            arguments, outs = self._arguments(trigger_value)
            if self.spec.is_async:
                value = await self.spec.user_function(**arguments)
            else:
                value = await run_in_threadpool(self.spec.user_function, **arguments)
            result = await run_in_threadpool(self._finish, value, outs, binding_data or {})
        except BaseException as exc:
            self._log(started, exc)
            raise
        self._log(started, None)
        return result

    def _log(self, started: float, error: BaseException | None) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        trigger = self.spec.trigger_type
        if error is None:
            log.info("%s %s: Succeeded in %.0f ms", self.spec.name, trigger, duration_ms)
        else:
            log.error(
                "%s %s: Failed in %.0f ms: %s: %s",
                self.spec.name,
                trigger,
                duration_ms,
                type(error).__name__,
                error,
                exc_info=error,
            )
