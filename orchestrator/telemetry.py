"""Counters an alert can fire on (OpenTelemetry metrics API).

Without a configured meter provider the API is a no-op, so counting costs nothing locally; in
Azure the host's OpenTelemetry setup exports them. The API is imported on first use, never at
`import function_app`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

METER = "retrain_orchestrator"


@cache
def _counter(name: str) -> Any:
    from opentelemetry import metrics

    return metrics.get_meter(METER).create_counter(f"retrain.{name}")


def count(name: str, value: int = 1, **attributes: str) -> None:
    """Add `value` to the counter `retrain.<name>` with these attributes."""
    _counter(name).add(value, attributes)
