"""The demo's story: three chapters of data landing, each followed until its promotion has
finished (approving when asked), shown live; `run_demo` runs it all and returns the result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from devhost.demo.inputs import TrafficGenerator, load_dataset, write_batch
from devhost.demo.report import write_report

REPO = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer"
APPROVER = "demo-lead@example.com"


@dataclass
class DemoOptions:
    output_dir: Path = REPO / "demo-output"
    policy_dir: Path = Path(__file__).resolve().parent / "policies"
    mlflow_ui: bool = True
    traffic_threads: int = 3
    phase_timeout: float = 300.0
    console: Console = field(default_factory=Console)
    # A person approves from the dashboard instead of the story (docs/dashboard.md).
    approve_in_dashboard: bool = False
    # After the story: the app (and its dashboard) stays up until Ctrl-C.
    keep_open: bool = False


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
    dashboard_url: str | None = None


# ----------------------------------------------------------------------------- the story


class Story:
    def __init__(
        self,
        options: DemoOptions,
        runtime: Any,
        traffic: TrafficGenerator,
        dashboard_url: str | None = None,
    ) -> None:
        self.options = options
        self.dashboard_url = dashboard_url
        self.runtime = runtime
        self.traffic = traffic
        self.phase = "starting"
        self.log: list[str] = []
        self.started = time.monotonic()
        self.approved: set[str] = set()

    def status(self) -> dict[str, Any]:
        return self.runtime.queries.model_status(MODEL)

    def say(self, line: str) -> None:
        stamp = f"{time.monotonic() - self.started:6.1f}s"
        self.log.append(f"{stamp}  {line}")
        if not self.options.console.is_terminal:
            self.options.console.print(f"{stamp}  {line}", highlight=False)

    def send_data(self, files: list[Path]) -> None:
        from devhost.cli.commands import send_data

        upload = send_data(self.runtime, MODEL, files)
        self.say(f"landed {len(files)} file(s): {', '.join(b.blob_name for b in upload.blobs)}")

    def approve_when_asked(self, status: dict[str, Any]) -> None:
        from devhost.cli.commands import send_approval

        active = status.get("active_promotion")
        if not active or active["status"] != "awaiting_approval" or active["id"] in self.approved:
            return
        self.approved.add(active["id"])
        if self.options.approve_in_dashboard:
            self.say(
                f"v{active['candidate_version']} awaits approval: approve or reject it in the "
                f"dashboard, signed in as {APPROVER} ({self.dashboard_url})"
            )
            return
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


def demo_settings(options: DemoOptions, endpoint_url: str, endpoint_key: str) -> dict[str, str]:
    local = options.output_dir / "local"
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "DataStorage": "UseDevelopmentStorage=true",
        "DATA_CONTAINER": "training-data",
        "DEVHOST_EVENT_GRID_SUBSCRIPTIONS": "data_blob_created=DataStorage:%DATA_CONTAINER%",
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
        "LOCAL_ENDPOINT_KEY": endpoint_key,  # the same key the endpoint server was given
        "LOCAL_ENDPOINT_DIR": str(local / "endpoint"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def demo_endpoint(options: DemoOptions) -> str:
    """The endpoint the demo policy names for the model: where its traffic goes."""
    from orchestrator.policy_files import load_policies, policy_for

    return policy_for(load_policies(options.policy_dir), MODEL).endpoint


def run_demo(options: DemoOptions) -> DemoResult:
    import shutil

    from devhost.host.dev_host import DevHost
    from endpoint_server import start_local_endpoint
    from endpoint_server.server import new_key
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
    # One key, given to the endpoint server (its environment), the app and the traffic.
    endpoint_key = new_key()
    endpoint = start_local_endpoint(
        local / "endpoint",
        tracking_uri,
        subprocess_mode=True,
        max_lifetime=1800,
        key=endpoint_key,
    )
    settings = demo_settings(options, endpoint.url, endpoint_key)
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
    endpoint_name = demo_endpoint(options)
    traffic = TrafficGenerator(
        endpoint.url, endpoint_name, dataset, options.traffic_threads, endpoint_key
    )
    phases: list[PhaseResult] = []
    try:
        set_runtime(None)  # the app's runtime is built from the settings devhost exported
        host.start()
        runtime = get_runtime()
        console.print(f"Functions app: {host.http_url} (key in {local / 'function-key'})")
        dashboard_url = f"{host.http_url}/dashboard?code={host.function_key}"
        # soft_wrap: the URL stays one line to copy, whatever the console's width.
        console.print(
            f"[bold]Dashboard (live while the demo runs):[/bold] {dashboard_url}", soft_wrap=True
        )
        if host.mlflow_url:
            console.print(f"MLflow UI: {host.mlflow_url}")
        traffic.start()
        story = Story(options, runtime, traffic, dashboard_url)
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
        final = runtime.queries.model_status(MODEL)
        promotions = {}
        for phase in phases:
            if phase.promotion_id:
                found = runtime.queries.find_promotion(phase.promotion_id)
                audit = runtime.queries.audit_trail(MODEL, phase.promotion_id)
                promotions[phase.promotion_id] = {
                    "promotion": found[1] if found else None,
                    "audit": [record.model_dump(mode="json") for record in audit],
                }
        from adapters.local_endpoint import LocalEndpoint

        with LocalEndpoint(endpoint.url, endpoint_name, key=endpoint_key) as client:
            endpoint_traffic = client.traffic()
        traffic_stats = traffic.snapshot()
        mlflow_url = host.mlflow_url
        png, html = write_report(
            options.output_dir,
            phases,
            promotions,
            final,
            mlflow_url,
            dashboard_url=dashboard_url,  # written without its key (the report says where it is)
            key_file=local / "function-key",
        )
        if options.keep_open:
            traffic.stop()
            console.print(f"Report: {html}")
            console.print(
                f"The dashboard stays live at {dashboard_url}: Ctrl-C to stop.", soft_wrap=True
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        traffic.stop()
        host.stop()
        endpoint.stop()
        set_runtime(None)
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
        dashboard_url=dashboard_url,
    )
