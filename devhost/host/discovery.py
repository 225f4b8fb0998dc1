"""Find the functions of an `azure.functions.FunctionApp` and check them like the host does."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

import azure.functions as func

from devhost.host.settings import DevHostError, resolve_placeholders

HTTP_TRIGGER = "httpTrigger"
BLOB_TRIGGER = "blobTrigger"
SERVICE_BUS_TRIGGER = "serviceBusTrigger"
EVENT_HUB_TRIGGER = "eventHubTrigger"
TIMER_TRIGGER = "timerTrigger"
EVENT_GRID_TRIGGER = "eventGridTrigger"
QUEUE_TRIGGER = "queueTrigger"
SUPPORTED_TRIGGERS = frozenset(
    {HTTP_TRIGGER, BLOB_TRIGGER, SERVICE_BUS_TRIGGER, EVENT_HUB_TRIGGER, TIMER_TRIGGER,
     QUEUE_TRIGGER, EVENT_GRID_TRIGGER}
)  # fmt: skip
# Output bindings devhost can honour (see devhost/host/outputs.py).
SUPPORTED_OUTPUTS = frozenset({"http", "queue", "serviceBus", "eventHub", "blob"})
RETURN = "$return"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")
CONTEXT = "context"
# Binding fields that may hold %SETTING% placeholders (names of settings stay as they are).
_RESOLVED_FIELDS = ("path", "queueName", "topicName", "subscriptionName", "eventHubName",
                    "consumerGroup", "schedule", "route")  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    """A function's `@app.retry(...)`: honoured for timer and Event Hubs triggers, as in Azure."""

    strategy: str
    max_retry_count: int
    delay: timedelta = timedelta(0)
    minimum_interval: timedelta = timedelta(0)
    maximum_interval: timedelta = timedelta(0)

    @classmethod
    def from_setting(cls, setting: Mapping[str, Any]) -> RetryPolicy:
        return cls(
            strategy=str(setting.get("strategy", "fixed_delay")).lower(),
            max_retry_count=int(setting.get("max_retry_count", 0)),
            delay=_timespan(setting.get("delay_interval")),
            minimum_interval=_timespan(setting.get("minimum_interval")),
            maximum_interval=_timespan(setting.get("maximum_interval")),
        )

    def delay_before(self, retry: int) -> timedelta:
        """The wait before retry number `retry` (1-based)."""
        if self.strategy.startswith("exponential"):
            delay = self.minimum_interval * 2 ** (retry - 1)
            return min(delay, self.maximum_interval) if self.maximum_interval else delay
        return self.delay


def _timespan(value: Any) -> timedelta:
    """A .NET TimeSpan as the retry settings write it: `hh:mm:ss` or `d.hh:mm:ss`."""
    if not value:
        return timedelta(0)
    match = _TIMESPAN.match(str(value).strip())
    if match is None:
        raise DevHostError(f"retry interval {value!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes, seconds = match.groups()
    return timedelta(
        days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds)
    )


@dataclass(frozen=True)
class FunctionSpec:
    """One function as the host sees it: name, resolved bindings and the Python callable."""

    name: str
    trigger: dict[str, Any]
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]
    user_function: Callable[..., Any]
    wants_context: bool
    retry: RetryPolicy | None = None

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


def load_app(target: str | ModuleType | func.FunctionApp) -> func.FunctionApp:
    """The FunctionApp in a module (by name or object), or the app itself."""
    if isinstance(target, func.FunctionApp):
        return target
    if isinstance(target, str):
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name != target:
                raise DevHostError(f"the app {target!r} failed to load: {exc}") from exc
            raise DevHostError(f"no module {target!r} (run devhost from the app's folder)") from exc
        except Exception as exc:  # as the Functions host: the app fails to index, with why
            raise DevHostError(f"the app {target!r} failed to load: {exc}") from exc
    else:
        module = target
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionApp)]
    if not apps:
        raise DevHostError(f"module {module.__name__!r} defines no azure.functions.FunctionApp")
    if len(apps) > 1:
        raise DevHostError(f"module {module.__name__!r} defines {len(apps)} FunctionApps; one only")
    return apps[0]


def discover(app: func.FunctionApp, environ: Mapping[str, str] | None = None) -> list[FunctionSpec]:
    """Every function of the app, validated; the first problem found is a DevHostError."""
    environ = os.environ if environ is None else environ
    # get_functions() remembers the names it has seen and would reject a second indexing
    # (a host restart with the same app object): start from a clean slate each time.
    app.functions_bindings = {}
    specs = [_spec(function, environ) for function in app.get_functions()]
    _check_unique_names(specs)
    return specs


def _spec(function: Any, environ: Mapping[str, str]) -> FunctionSpec:
    name = function.get_function_name()
    bindings = json.loads(function.get_function_json())["bindings"]
    bindings = [_resolve_binding(binding, environ, name) for binding in bindings]
    triggers = [b for b in bindings if b["type"].endswith("Trigger")]
    if len(triggers) != 1:
        raise DevHostError(f"function {name!r}: expected one trigger, found {len(triggers)}")
    trigger = triggers[0]
    if trigger["type"] not in SUPPORTED_TRIGGERS:
        raise DevHostError(
            f"function {name!r}: trigger type {trigger['type']!r} is not supported by devhost "
            f"(supported: {', '.join(sorted(SUPPORTED_TRIGGERS))})"
        )
    inputs = tuple(b for b in bindings if b is not trigger and _direction(b) == "in")
    if inputs:
        kinds = ", ".join(sorted({b["type"] for b in inputs}))
        raise DevHostError(f"function {name!r}: input bindings ({kinds}) are not supported")
    outputs = tuple(b for b in bindings if _direction(b) == "out")
    for output in outputs:
        if output["type"] not in SUPPORTED_OUTPUTS:
            raise DevHostError(
                f"function {name!r}: output binding type {output['type']!r} is not supported"
            )
    user_function = function.get_user_function()
    wants_context = _check_parameters(name, user_function, bindings)
    retry_setting = function.get_settings_dict("retry_policy")
    retry = RetryPolicy.from_setting(retry_setting) if retry_setting else None
    return FunctionSpec(name, trigger, inputs, outputs, user_function, wants_context, retry)


def _direction(binding: Mapping[str, Any]) -> str:
    return str(binding.get("direction", "in")).lower()


def _resolve_binding(binding: dict[str, Any], environ: Mapping[str, str], name: str) -> dict:
    resolved = dict(binding)
    for key in _RESOLVED_FIELDS:
        value = resolved.get(key)
        if isinstance(value, str):
            where = f"function {name!r}, binding {binding.get('name')!r}, {key}"
            resolved[key] = resolve_placeholders(value, environ, where)
    return resolved


def _check_parameters(name: str, user_function: Callable[..., Any], bindings: list[dict]) -> bool:
    """Binding names and parameters must match (else the real host drops the whole app)."""
    parameters = set(inspect.signature(user_function).parameters)
    bound = {b["name"] for b in bindings if b["name"] != RETURN}
    missing = sorted(bound - parameters)
    if missing:
        raise DevHostError(
            f"function {name!r}: binding name(s) {missing} match no parameter of "
            f"{user_function.__name__}{inspect.signature(user_function)}; "
            "arg_name must be the parameter's name"
        )
    extra = sorted(parameters - bound - {CONTEXT})
    if extra:
        raise DevHostError(
            f"function {name!r}: parameter(s) {extra} of {user_function.__name__} "
            "have no binding (only 'context' may be unbound)"
        )
    return CONTEXT in parameters and CONTEXT not in bound


def _check_unique_names(specs: list[FunctionSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name.lower() in seen:
            raise DevHostError(f"two functions are named {spec.name!r}")
        seen.add(spec.name.lower())
