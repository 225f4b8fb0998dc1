"""`make demo`: the whole loop on one machine, no Azure subscription.

A dataset that ships with scikit-learn lands in batches; a first model trains and goes to
production; new data lands and the new model walks staging, approval and a canary
(10 -> 25 -> 50 -> 100) to production, driven by a traffic generator that sends labeled
requests and their feedback; then a corrupted batch (flipped labels) lands, fools the offline
evaluation (its own holdout is corrupted too), and is caught by the canary and rolled back.

Everything is real: Azurite, the Functions app under devhost, the local pipeline runner
(scikit-learn + MLflow), the local endpoint, MLflow. Timings come from the demo policy in
devhost/demo_policies/. At the end: a report with each promotion's timeline.

    python -m devhost.demo [--output demo-output] [--no-mlflow-ui]
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
MODEL = "breast-cancer"
APPROVER = "demo-lead@example.com"


@dataclass
class DemoOptions:
    output_dir: Path = REPO / "demo-output"
    policy_dir: Path = REPO / "devhost" / "demo_policies"
    mlflow_ui: bool = True
    traffic_threads: int = 3
    phase_timeout: float = 300.0
    console: Console = field(default_factory=Console)


@dataclass
class PhaseResult:
    name: str
    version: str | None
    outcome: str | None
    promotion_id: str | None
    seconds: float


@dataclass
class DemoResult:
    phases: list[PhaseResult]
    final_status: dict[str, Any]
    promotions: dict[str, dict[str, Any]]
    traffic: dict[str, Any]
    endpoint_traffic: dict[str, int]
    report_html: Path
    timeline_png: Path
    mlflow_url: str | None
    seconds: float


# ----------------------------------------------------------------------------- data


@dataclass
class Dataset:
    columns: list[str]
    rows: list[list[float]]
    labels: list[int]


def load_dataset() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    order = list(range(len(bunch.target)))
    random.Random(7).shuffle(order)
    return Dataset(
        columns=[str(name) for name in bunch.feature_names],
        rows=[[float(x) for x in bunch.data[i]] for i in order],
        labels=[int(bunch.target[i]) for i in order],
    )


def write_batch(
    dataset: Dataset, folder: Path, name: str, start: int, stop: int, flip: bool = False
) -> Path:
    """A CSV of rows [start, stop) with a `label` column; `flip` corrupts every label."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*dataset.columns, "label"])
        for row, label in zip(dataset.rows[start:stop], dataset.labels[start:stop], strict=True):
            writer.writerow([*row, 1 - label if flip else label])
    return path


# ----------------------------------------------------------------------------- traffic


class TrafficGenerator:
    """Labeled requests to the local endpoint, then their feedback (the true label).

    Each request carries an entity key, so one patient sees one model during a step."""

    def __init__(self, endpoint_url: str, dataset: Dataset, threads: int) -> None:
        self.endpoint_url = endpoint_url
        self.dataset = dataset
        self.threads = threads
        self.sent = 0
        self.failed = 0
        self.served: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._run, args=(index,), name=f"traffic-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)

    def _run(self, index: int) -> None:
        import httpx

        chooser = random.Random(1000 + index)
        feedback: list[dict[str, Any]] = []
        with httpx.Client(base_url=self.endpoint_url, timeout=10) as client:
            while not self._stop.is_set():
                row = chooser.randrange(len(self.dataset.rows))
                key = f"patient-{chooser.randrange(100_000)}"
                try:
                    response = client.post(
                        "/score",
                        json={
                            "input_data": {
                                "columns": self.dataset.columns,
                                "data": [self.dataset.rows[row]],
                            }
                        },
                        headers={"x-request-key": key},
                    )
                except httpx.HTTPError:
                    response = None
                if response is None or response.status_code != 200:
                    with self._lock:
                        self.failed += 1
                    self._stop.wait(0.2)  # nothing serves yet, or a deployment is changing
                    continue
                request_id = response.headers.get("x-request-id", "")
                feedback.append({"request_id": request_id, "label": self.dataset.labels[row]})
                with self._lock:
                    self.sent += 1
                    self.served[response.headers.get("azureml-model-deployment", "?")] += 1
                if len(feedback) >= 20:
                    client.post("/feedback", json={"feedback": feedback})
                    feedback = []

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"sent": self.sent, "failed": self.failed, "served": dict(self.served)}


# ----------------------------------------------------------------------------- the story


class Story:
    def __init__(self, options: DemoOptions, runtime: Any, traffic: TrafficGenerator) -> None:
        self.options = options
        self.runtime = runtime
        self.traffic = traffic
        self.phase = "starting"
        self.log: list[str] = []
        self.started = time.monotonic()
        self.approved: set[str] = set()

    def status(self) -> dict[str, Any]:
        return self.runtime.orchestrator.model_status(MODEL)

    def say(self, line: str) -> None:
        stamp = f"{time.monotonic() - self.started:6.1f}s"
        self.log.append(f"{stamp}  {line}")
        if not self.options.console.is_terminal:
            self.options.console.print(f"{stamp}  {line}", highlight=False)

    def send_data(self, files: list[Path]) -> None:
        from devhost.cli import send_data

        upload = send_data(self.runtime, MODEL, files)
        self.say(f"landed {len(files)} file(s): {', '.join(b.blob_name for b in upload.blobs)}")

    def approve_when_asked(self, status: dict[str, Any]) -> None:
        from devhost.cli import send_approval

        active = status.get("active_promotion")
        if not active or active["status"] != "awaiting_approval" or active["id"] in self.approved:
            return
        self.approved.add(active["id"])
        send_approval(
            self.runtime,
            active["id"],
            "approve",
            APPROVER,
            comment="offline metrics look fine",
        )
        self.say(f"{APPROVER} approved v{active['candidate_version']} ({active['id']})")

    def wait_for_outcome(self, version_after: int, live: Live | None) -> PhaseResult:
        """Until a promotion of a version newer than `version_after` has finished."""
        started = time.monotonic()
        last_line = ""
        while time.monotonic() - started < self.options.phase_timeout:
            status = self.status()
            self.approve_when_asked(status)
            line = describe(status)
            if line != last_line:
                self.say(line)
                last_line = line
            if live is not None:
                live.update(self.render(status))
            for entry in status["recent_promotions"]:
                if (
                    int(entry["candidate_version"]) > version_after
                    and status["active_promotion"] is None
                ):
                    return PhaseResult(
                        self.phase,
                        entry["candidate_version"],
                        entry["outcome"],
                        entry["promotion_id"],
                        time.monotonic() - started,
                    )
            time.sleep(0.5)
        raise TimeoutError(
            f"phase {self.phase!r}: nothing finished in {self.options.phase_timeout} s"
        )

    def render(self, status: dict[str, Any]) -> Table:
        table = Table(title=f"retrain-orchestrator demo — {self.phase}", expand=True)
        table.add_column("what", style="bold")
        table.add_column("now")
        production = status.get("production") or {}
        table.add_row(
            "production", f"v{production.get('version', '-')} ({production.get('deployment', '-')})"
        )
        active = status.get("active_promotion")
        if active:
            gates = active.get("gates") or []
            last_gate = gates[-1] if gates else None
            table.add_row(
                "promotion",
                f"v{active['candidate_version']} {active['status']} {active['step']} "
                f"{active.get('traffic_weight', 0)}% on the candidate",
            )
            if last_gate:
                table.add_row("last gate", f"{last_gate['step']}: {last_gate['outcome']}")
        retrain = status.get("retrain") or {}
        job = retrain.get("current_job")
        table.add_row(
            "training", f"{job['run_id']} ({job.get('status', 'running')})" if job else "idle"
        )
        traffic = self.traffic.snapshot()
        table.add_row(
            "traffic",
            f"{traffic['sent']} requests; served by "
            + ", ".join(f"{k}: {v}" for k, v in sorted(traffic["served"].items())),
        )
        for line in self.log[-8:]:
            table.add_row("", line)
        return table


def describe(status: dict[str, Any]) -> str:
    production = status.get("production")
    active = status.get("active_promotion")
    job = (status.get("retrain") or {}).get("current_job")
    parts = [f"production v{production['version']}" if production else "nothing in production"]
    if active:
        parts.append(
            f"promotion v{active['candidate_version']}: {active['status']} "
            f"{active['step']} ({active.get('traffic_weight', 0)}%)"
        )
    if job:
        parts.append(f"training {job['run_id']}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- running it


def demo_settings(options: DemoOptions, endpoint_url: str) -> dict[str, str]:
    local = options.output_dir / "local"
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "DataStorage": "UseDevelopmentStorage=true",
        "DATA_CONTAINER": "training-data",
        "STATE_CONTAINER": "retrain-state",
        "ORCHESTRATOR_QUEUE": "orchestrator",
        "APPROVALS_QUEUE": "approvals",
        "DATA_EVENTS_HUB": "data-ready",
        "LIFECYCLE_EVENTS_HUB": "model-lifecycle",
        "MAX_DELIVERIES": "5",
        "DEPLOYMENT_POLL_SECONDS": "1",
        "POLICY_DIR": str(options.policy_dir),
        "RETRAIN_LOCAL_DIR": str(local),
        "MLFLOW_TRACKING_URI": f"sqlite:///{(local / 'mlflow.db').resolve()}",
        "LOCAL_ENDPOINT_URL": endpoint_url,
        "LOCAL_ENDPOINT_DIR": str(local / "endpoint"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def run_demo(options: DemoOptions) -> DemoResult:
    import shutil

    from devhost.host import DevHost
    from endpoint_server import start_local_endpoint
    from orchestrator.bootstrap import get_runtime, set_runtime

    began = time.monotonic()
    console = options.console
    shutil.rmtree(options.output_dir, ignore_errors=True)
    local = options.output_dir / "local"
    (local / "endpoint").mkdir(parents=True)
    tracking_uri = f"sqlite:///{(local / 'mlflow.db').resolve()}"
    dataset = load_dataset()
    batches = options.output_dir / "data"
    first = [
        write_batch(dataset, batches, "batch-a-1", 0, 120),
        write_batch(dataset, batches, "batch-a-2", 120, 240),
    ]
    second = [write_batch(dataset, batches, "batch-b", 240, 420)]
    corrupted = [write_batch(dataset, batches, "batch-c-flipped", 400, 569, flip=True)]

    console.print("[bold]Starting the local endpoint, Azurite and the Functions app…[/bold]")
    endpoint = start_local_endpoint(
        local / "endpoint", tracking_uri, subprocess_mode=True, max_lifetime=1800
    )
    settings = demo_settings(options, endpoint.url)
    host = DevHost(
        "function_app",
        settings,
        port=0,
        mlflow_ui=options.mlflow_ui,
        retry_delay_scale=0,
        max_deliveries=5,
        poll_interval=0.3,
        state_dir=local,
    )
    traffic = TrafficGenerator(endpoint.url, dataset, options.traffic_threads)
    phases: list[PhaseResult] = []
    try:
        set_runtime(None)  # the app's runtime is built from the settings devhost exported
        host.start()
        runtime = get_runtime()
        console.print(f"Functions app: {host.http_url} (key in {local / 'function-key'})")
        if host.mlflow_url:
            console.print(f"MLflow UI: {host.mlflow_url}")
        traffic.start()
        story = Story(options, runtime, traffic)
        live = Live(console=console, refresh_per_second=4) if console.is_terminal else None
        if live is not None:
            live.start()
        try:
            chapters: list[tuple[str, list[Path]]] = [
                ("first model", first),
                ("new data: a better model", second),
                ("corrupted data: flipped labels", corrupted),
            ]
            newest = 0
            for name, files in chapters:
                story.phase = name
                story.say(f"== {name}")
                story.send_data(files)
                result = story.wait_for_outcome(newest, live)
                phases.append(result)
                newest = int(result.version or newest)
                story.say(f"v{result.version}: {result.outcome}")
        finally:
            if live is not None:
                live.stop()
        final = runtime.orchestrator.model_status(MODEL)
        promotions = {}
        for phase in phases:
            if phase.promotion_id:
                found = runtime.orchestrator.find_promotion(phase.promotion_id)
                audit = runtime.orchestrator.audit_trail(MODEL, phase.promotion_id)
                promotions[phase.promotion_id] = {
                    "promotion": found[1] if found else None,
                    "audit": [record.model_dump(mode="json") for record in audit],
                }
        from adapters.local_endpoint import LocalEndpoint

        with LocalEndpoint(endpoint.url) as client:
            endpoint_traffic = client.traffic()
        traffic_stats = traffic.snapshot()
        mlflow_url = host.mlflow_url
    finally:
        traffic.stop()
        host.stop()
        endpoint.stop()
        set_runtime(None)
    png, html = write_report(options.output_dir, phases, promotions, final, mlflow_url)
    return DemoResult(
        phases=phases,
        final_status=final,
        promotions=promotions,
        traffic=traffic_stats,
        endpoint_traffic=endpoint_traffic,
        report_html=html,
        timeline_png=png,
        mlflow_url=mlflow_url,
        seconds=time.monotonic() - began,
    )


# ----------------------------------------------------------------------------- the report


def timeline(promotion: dict[str, Any]) -> dict[str, list[Any]]:
    """Traffic on the candidate and the canary gates' accuracy per arm, over time (seconds)."""
    audit = promotion["audit"]
    if not audit:
        return {"t": [], "weight": [], "gate_t": [], "canary": [], "production": []}
    start = datetime.fromisoformat(audit[0]["time"])
    times, weights = [], []
    weight = 0
    for record in audit:
        state = record.get("to_state")
        detail = record.get("detail") or {}
        if state == "canary" and "traffic" in detail:
            weight = int(detail["traffic"])
        elif state in ("production_bake", "completed"):
            weight = 100
        elif state in ("rolled_back", "rejected", "failed"):
            weight = 0
        times.append((datetime.fromisoformat(record["time"]) - start).total_seconds())
        weights.append(weight)
    gate_t, canary, production = [], [], []
    for record in audit:
        if not record["action"].startswith("gate."):
            continue
        for evidence in (record.get("detail") or {}).get("evidence", []):
            if evidence.get("gate") == "canary:accuracy" and evidence.get("values"):
                gate_t.append((datetime.fromisoformat(record["time"]) - start).total_seconds())
                canary.append(evidence["values"].get("canary"))
                production.append(evidence["values"].get("production"))
    return {
        "t": times,
        "weight": weights,
        "gate_t": gate_t,
        "canary": canary,
        "production": production,
    }


def write_report(
    output_dir: Path,
    phases: list[PhaseResult],
    promotions: dict[str, dict[str, Any]],
    final: dict[str, Any],
    mlflow_url: str | None,
) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [phase for phase in phases if phase.promotion_id in promotions]
    figure, axes = plt.subplots(
        len(shown) or 1, 1, figsize=(9, 2.8 * max(1, len(shown))), squeeze=False
    )
    for axis, phase in zip(axes[:, 0], shown, strict=False):
        series = timeline(promotions[str(phase.promotion_id)])
        axis.step(
            series["t"],
            series["weight"],
            where="post",
            color="tab:blue",
            label="traffic on candidate (%)",
        )
        axis.set_ylim(-5, 105)
        axis.set_ylabel("% traffic")
        axis.set_title(f"{phase.name}: v{phase.version} → {phase.outcome}", fontsize=10)
        if series["gate_t"]:
            other = axis.twinx()
            other.plot(
                series["gate_t"], series["canary"], "o-", color="tab:red", label="canary accuracy"
            )
            other.plot(
                series["gate_t"],
                series["production"],
                "s--",
                color="tab:green",
                label="production accuracy",
            )
            other.set_ylim(0, 1.05)
            other.set_ylabel("accuracy (gate)")
            other.legend(loc="center right", fontsize=8)
        axis.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the candidate was registered")
    figure.tight_layout()
    png = output_dir / "timeline.png"
    figure.savefig(png, dpi=110)
    plt.close(figure)

    rows = "".join(
        f"<tr><td>{phase.name}</td><td>v{phase.version}</td><td>{phase.outcome}</td>"
        f"<td>{phase.promotion_id}</td><td>{phase.seconds:.0f} s</td></tr>"
        for phase in phases
    )
    audits = ""
    for promotion_id, promotion in promotions.items():
        lines = "".join(
            f"<tr><td>{r['time'][11:19]}</td><td>{r['action']}</td><td>{r.get('from_state') or ''}"
            f" → {r.get('to_state') or ''}</td><td>{r.get('actor') or ''}</td>"
            f"<td>{(r.get('detail') or {}).get('cause', '')}</td></tr>"
            for r in promotion["audit"]
        )
        audits += f"<h3>{promotion_id}</h3><table>{lines}</table>"
    production = final.get("production") or {}
    database = output_dir / "local" / "mlflow.db"
    ui_command = f"python -m mlflow ui --backend-store-uri sqlite:///{database}"
    html = output_dir / "report.html"
    html.write_text(
        "<!doctype html><meta charset='utf-8'><title>retrain-orchestrator demo</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}td{padding:2px 8px}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style>"
        "<h1>retrain-orchestrator demo</h1>"
        f"<p>Production: v{production.get('version')} ({production.get('deployment')})</p>"
        "<img src='timeline.png' style='max-width:100%'>"
        f"<h2>Promotions</h2><table><tr><th>phase</th><th>version</th><th>outcome</th>"
        f"<th>promotion</th><th>took</th></tr>{rows}</table>"
        f"<h2>Audit trails</h2>{audits}"
        "<h2>Where to look in MLflow</h2><ul>"
        f"<li>UI: {mlflow_url or ui_command}</li>"
        "<li>Experiment <b>breast-cancer-retrain</b>: one run per pipeline step; the "
        "evaluate_register run has auc/accuracy and champion_auc/champion_accuracy on the "
        "same holdout.</li>"
        "<li>Experiment <b>retrain-orchestrator-canary</b>: one run per promotion with "
        "per-deployment live metrics at each canary step.</li>"
        "<li>Models → <b>breast-cancer</b>: every version, tagged retrain.stage and "
        "retrain.promotion_id.</li></ul>"
    )
    (output_dir / "summary.json").write_text(
        json.dumps(
            {"phases": [phase.__dict__ for phase in phases], "final": final},
            indent=2,
            default=str,
        )
    )
    return png, html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", type=Path, default=REPO / "demo-output")
    parser.add_argument("--no-mlflow-ui", action="store_true")
    arguments = parser.parse_args(argv)
    options = DemoOptions(
        output_dir=arguments.output.resolve(), mlflow_ui=not arguments.no_mlflow_ui
    )
    result = run_demo(options)
    console = options.console
    console.print()
    for phase in result.phases:
        console.print(
            f"[bold]{phase.name}[/bold]: v{phase.version} {phase.outcome} ({phase.seconds:.0f} s)"
        )
    production = result.final_status.get("production") or {}
    console.print(
        f"Production now: v{production.get('version')}; endpoint traffic {result.endpoint_traffic}"
    )
    console.print(f"Report: {result.report_html}  (timeline: {result.timeline_png})")
    console.print(f"The demo took {result.seconds:.0f} s.")
    if result.mlflow_url:
        console.print(f"MLflow UI was at {result.mlflow_url}; it stopped with the demo.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
