"""Canned Azure ML answers for a pipeline submission and a status poll.

`FakeAzureML` is the shared recording transport (`tests.azure_recording`) answering the way
the Azure ML service does (canned JSON for each route). Passed to MLClient as `transport=`,
the real azure-ai-ml SDK builds and sends its real REST requests (URL, method, JSON body),
and tests read what was really sent. Nothing leaves the process.
"""

from __future__ import annotations

import json
from typing import Any

from tests.azure_recording import Canned, Recorded, RecordingTransport, not_found

ARM = "https://management.azure.com"
WORKSPACE = (
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws-1"
)
RUN_HISTORY = "https://westeurope.api.azureml.ms"


class FakeAzureML(RecordingTransport):
    """Answers the Azure ML REST routes a pipeline submission and a status poll use.

    Jobs are kept by name: a PUT stores the job (echoed back with status NotStarted), a
    GET returns it or 404. `jobs_status[name]` sets what a GET reports; `job_tags[name]`
    adds tags; `run_errors[name]` is the run-history error; `faults` are answered first
    (in order) for requests matching their predicate. `Recorded.path` is the URL without
    its query.
    """

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_status: dict[str, str] = {}
        self.job_tags: dict[str, dict[str, str]] = {}
        self.run_errors: dict[str, dict[str, str]] = {}
        self.children: dict[str, list[dict[str, Any]]] = {}

    def _answer(self, request: Recorded) -> Canned:
        url = request.path
        path = url.removeprefix(ARM).removeprefix(RUN_HISTORY)
        method = request.method
        if url == f"{ARM}{WORKSPACE}" and method == "GET":
            return Canned(200, self._workspace())
        if url == f"{RUN_HISTORY}/discovery":
            return Canned(200, {"api": RUN_HISTORY, "history": RUN_HISTORY})
        if path.startswith(f"{WORKSPACE}/computes/") and method == "GET":
            return Canned(200, self._compute(path))
        if path.startswith(f"{WORKSPACE}/codes/") and method == "GET":
            return Canned(200, self._code(path))
        if method == "PUT" and (
            path.startswith(f"{WORKSPACE}/environments/")
            or path.startswith(f"{WORKSPACE}/components/")
        ):
            return Canned(200, _echo(path, request.body))
        if path.startswith(f"{WORKSPACE}/jobs/") and path.endswith("/cancel"):
            return self._cancel(path.split("/jobs/", 1)[1].split("/")[0], method)
        if path.startswith(f"{WORKSPACE}/jobs/"):
            return self._job(path.rsplit("/", 1)[1], method, path, request.body)
        if "/history/v1.0" in url:
            return self._history(path)
        return not_found(f"no canned answer for {method} {url}")

    def _job(self, name: str, method: str, path: str, body: Any) -> Canned:
        if method == "PUT":
            stored = _echo(path, body)
            stored["type"] = "Microsoft.MachineLearningServices/workspaces/jobs"
            self.jobs[name] = stored
            self.job_status.setdefault(name, "NotStarted")
        if name not in self.jobs:
            return not_found(f"Job {name} not found")
        job = json.loads(json.dumps(self.jobs[name]))
        job["properties"]["status"] = self.job_status[name]
        job["properties"]["tags"] = {
            **job["properties"].get("tags", {}),
            **self.job_tags.get(name, {}),
        }
        return Canned(201 if method == "PUT" else 200, job)

    def _cancel(self, name: str, method: str) -> Canned:
        """POST .../jobs/{name}/cancel: accepted while the job runs; refused once it ended."""
        if method != "POST" or name not in self.jobs:
            return not_found(f"Job {name} not found")
        if self.job_status[name] in ("Completed", "Failed", "Canceled"):
            message = f"Job {name} is in terminal state {self.job_status[name]}"
            return Canned(400, {"error": {"code": "UserError", "message": message}})
        self.job_status[name] = "CancelRequested"
        return Canned(202, None)

    def _history(self, path: str) -> Canned:
        parts = path.split("/runs/", 1)[1].split("/")
        name, what = parts[0], parts[1] if len(parts) > 1 else ""
        if what == "details":
            body: dict[str, Any] = {"runId": name, "status": self.job_status.get(name)}
            if name in self.run_errors:
                body["error"] = {"error": self.run_errors[name]}
            return Canned(200, body)
        if what == "children":
            return Canned(200, {"value": self.children.get(name, [])})
        return not_found(f"no run {name}")

    @staticmethod
    def _workspace() -> dict[str, Any]:
        return {
            "id": WORKSPACE,
            "name": "ws-1",
            "location": "westeurope",
            "properties": {"discoveryUrl": f"{RUN_HISTORY}/discovery"},
        }

    @staticmethod
    def _compute(path: str) -> dict[str, Any]:
        return {
            "id": path,
            "name": path.rsplit("/", 1)[1],
            "location": "westeurope",
            "properties": {
                "computeType": "AmlCompute",
                "provisioningState": "Succeeded",
                "properties": {"vmSize": "STANDARD_DS3_V2"},
            },
        }

    @staticmethod
    def _code(path: str) -> dict[str, Any]:
        version = {
            "properties": {
                "codeUri": "https://acct.blob.core.windows.net/code/abc",
                "isAnonymous": True,
            }
        }
        if path.endswith("/versions"):  # list by content hash: the code is already uploaded
            return {"value": [{"id": f"{path}/1", "name": "1", **version}]}
        return {"id": path, "name": path.rsplit("/", 1)[1], **version}


def _echo(path: str, body: Any) -> dict[str, Any]:
    echoed = dict(body or {})
    echoed["id"] = path
    echoed["name"] = path.rstrip("/").rsplit("/", 1)[1]
    return echoed
