"""LatencyReader on Azure Monitor Logs: per-request latencies of an online deployment from the
endpoint's traffic log (table AmlOnlineEndpointTrafficLog, sent to a Log Analytics workspace
by the endpoint's diagnostic setting), read with azure-monitor-query's LogsQueryClient.

Azure's data collector records no latency, so in Azure this is where the canary's p95 gate
gets its samples: `TotalDurationMs` (request start to the last response byte) of the
deployment's successful requests (ResponseCode < 400) in the window, the same requests the
local request log's latencies cover. azure-monitor-query is imported when the reader is built.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

# Names the query embeds: endpoint and deployment names are ARM names, letters, digits and
# dashes. Anything else is refused rather than escaped into KQL.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# Rows one query reads at most (the Logs API answers at most 500,000 rows / 64 MB); a window
# with more is thinned evenly to `limit` anyway.
MAX_ROWS = 200_000


class LatencyUnavailable(RuntimeError):
    """The traffic log could not be read (the gate check then judges no latency: it waits)."""


class TrafficLogLatency:
    """LatencyReader: `latencies(endpoint, deployment, start, end, limit)` from Log Analytics."""

    def __init__(self, workspace_id: str, credential: Any, **client_kwargs: Any) -> None:
        from azure.monitor.query import LogsQueryClient

        self._workspace_id = workspace_id
        self._client = LogsQueryClient(credential, **client_kwargs)

    @staticmethod
    def query(endpoint: str, deployment: str) -> str:
        for what, name in (("endpoint", endpoint), ("deployment", deployment)):
            if not _NAME.match(name):
                raise ValueError(f"{what} name {name!r} cannot be queried")
        return (
            "AmlOnlineEndpointTrafficLog"
            f' | where EndpointName == "{endpoint}" and DeploymentName == "{deployment}"'
            " | where ResponseCode < 400"
            " | project TimeGenerated, TotalDurationMs"
            " | order by TimeGenerated asc"
            f" | take {MAX_ROWS}"
        )

    def latencies(
        self, endpoint: str, deployment: str, start: datetime, end: datetime, limit: int
    ) -> list[float]:
        from azure.monitor.query import LogsQueryStatus

        result = self._client.query_workspace(
            self._workspace_id, self.query(endpoint, deployment), timespan=(start, end)
        )
        if result.status != LogsQueryStatus.SUCCESS:
            # A partial result may be missing any part of the window: judge none of it.
            error = getattr(result, "partial_error", None)
            raise LatencyUnavailable(f"traffic log query incomplete: {error}")
        if not result.tables:
            return []
        table = result.tables[0]
        column = list(table.columns).index("TotalDurationMs")
        values = [float(row[column]) for row in table.rows if row[column] is not None]
        return _thinned(values, limit)


def _thinned(values: list[float], limit: int) -> list[float]:
    """At most `limit` values, evenly spaced in time order (as the canary evaluation thins)."""
    if len(values) <= limit:
        return values
    return [values[(i * len(values)) // limit] for i in range(limit)]
