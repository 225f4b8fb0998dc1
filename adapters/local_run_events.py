"""Azure ML's run events, locally: when the local runner ends a job, a `RunStatusChanged`
event (Event Grid schema) goes to the storage queue devhost reads for the data-events hub, as
the workspace's system topic sends it to the hub in Azure (infra/hooks/postdeploy.sh). The
local loop then checks the job at once, as Azure does (docs/retraining.md, "Job completion by
event"). Polling stays the fallback: a failure to send is logged, never raised.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.ports import TrainingRequest

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)

RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
# The local runner's final states -> Azure ML's status words.
RUN_STATUS = {"completed": "Completed", "failed": "Failed", "canceled": "Canceled"}
# devhost stands in for a hub with the storage queue of the same name (when it is a valid one).
_QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def local_hub_queue(hub: str) -> str | None:
    """The queue devhost reads for `hub`, or None when the name is no valid queue name."""
    name = hub.lower()
    return name if _QUEUE_NAME.match(name) else None


def run_status_changed(run_id: str, experiment: str, state: str) -> dict[str, Any]:
    """The event as Azure ML's system topic sends it (the fields the app reads, and a few)."""
    return {
        "id": uuid.uuid4().hex,
        "topic": "local",
        "subject": f"experiments/local/runs/{run_id}",
        "eventType": RUN_STATUS_CHANGED,
        "eventTime": datetime.now(UTC).isoformat(),
        "data": {
            "experimentId": "local",
            "experimentName": experiment,
            "runId": run_id,
            "runType": "local.PipelineRun",
            "runStatus": RUN_STATUS[state],
            "runTags": {},
            "runProperties": {},
        },
        "dataVersion": "2",
        "metadataVersion": "1",
    }


class LocalRunEvents:
    """The local runner's `on_ended`: one event per job that ends. `queue` is called on the
    first event, so no storage client is built before a job ends."""

    def __init__(self, queue: Callable[[], QueueClient]) -> None:
        self._queue_factory = queue
        self._queue: QueueClient | None = None

    def __call__(self, request: TrainingRequest, state: str) -> None:
        if state not in RUN_STATUS:
            return
        from adapters.storage_queue_bus import send_raw

        document = run_status_changed(request.run_id, request.experiment, state)
        try:
            if self._queue is None:
                self._queue = self._queue_factory()
            send_raw(self._queue, json.dumps([document]).encode())
        except Exception:  # the job's poll still sees it end
            log.warning("could not send the run event of %s", request.run_id, exc_info=True)
