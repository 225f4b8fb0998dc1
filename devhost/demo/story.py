"""The demo's story: three chapters of data landing, each followed until its promotion has
finished (approving when asked), shown live; `run_demo` runs it all and returns the result.
`DemoSession` is what every story shares (devhost/demo/decay_story.py is the second): the
app, endpoint and traffic started, chapters followed, the report written."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.live import Live
from rich.table import Table

from devhost.demo.inputs import Dataset, TrafficGenerator, load_dataset, write_batch
from devhost.demo.report import write_report

T = TypeVar("T")

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
    # How much faster than real time the app's timers fire (devhost's timer clock only).
    timer_speed: float = 1.0


@dataclass
class PhaseResult:
    name: str
    version: str | None
    outcome: str | None
    promotion_id: str | None
    seconds: float


@dataclass
class Milestone:
    """One thing the story waited for, when it happened (seconds since the demo began, read
    from the audit's times), and its evidence in a line."""

    seconds: float
    what: str
    detail: str = ""


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
    milestones: list[Milestone] = field(default_factory=list)
    # The model's own audit (records of no promotion: the monitor's, the retrains'), when the
    # story reads it.
    model_audit: list[dict[str, Any]] = field(default_factory=list)
    # Each endpoint's traffic as the endpoint server reports it at the end, the model's own
    # first, then each later ring (policy `rings`) in order; {} for a ring never deployed to.
    rings_traffic: dict[str, dict[str, int]] = field(default_factory=dict)


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
        self.started_at = datetime.now(UTC)  # the milestones' zero, as the log's
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

    def wait_until(self, found: Callable[[dict[str, Any]], T | None], live: Live | None) -> T:
        """Until `found(status)` returns something, approving when asked and showing each
        change; raises TimeoutError after the phase's timeout."""
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
            result = found(status)
            if result is not None:
                return result
            time.sleep(0.5)
        raise TimeoutError(
            f"phase {self.phase!r}: nothing finished in {self.options.phase_timeout} s"
        )

    def wait_for_outcome(self, version_after: int, live: Live | None) -> PhaseResult:
        """Until a promotion of a version newer than `version_after` has finished."""
        started = time.monotonic()

        def finished(status: dict[str, Any]) -> PhaseResult | None:
            if status["active_promotion"] is not None:
                return None
            for entry in status["recent_promotions"]:
                if int(entry["candidate_version"]) > version_after:
                    return PhaseResult(
                        self.phase,
                        entry["candidate_version"],
                        entry["outcome"],
                        entry["promotion_id"],
                        time.monotonic() - started,
                    )
            return None

        return self.wait_until(finished, live)

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
        for ring in status.get("rings") or []:
            table.add_row(
                f"ring {ring['endpoint']}", f"v{ring['serving_version'] or '-'} ({ring['state']})"
            )
        traffic = self.traffic.snapshot()
        for endpoint, counts in traffic["endpoints"].items():
            table.add_row(
                f"traffic {endpoint}",
                f"{counts['sent']} requests; served by "
                + ", ".join(f"{k}: {v}" for k, v in sorted(counts["served"].items())),
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
    rings = status.get("rings") or []
    if len(rings) > 1:
        # Each ring's version and state (policy `rings`): where a walk across them is.
        parts.append(
            "rings "
            + ", ".join(
                f"{ring['endpoint']} v{ring['serving_version'] or '-'} {ring['state']}"
                for ring in rings
            )
        )
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


def demo_endpoints(options: DemoOptions) -> list[str]:
    """The endpoints the demo policy names for the model, where its traffic goes: its own
    endpoint, then each later ring (policy `rings`: a second local endpoint stands in for a
    second region)."""
    from orchestrator.policy_files import load_policies, policy_for

    policy = policy_for(load_policies(options.policy_dir), MODEL)
    return [policy.endpoint, *(ring.endpoint for ring in policy.rings[1:])]


def timer_clock(speed: float) -> Callable[[], datetime]:
    """Devhost's clock for timer schedules, `speed` times faster than real time from now: the
    app's 5-minute timer fires every 300/speed s. Only when timers fire changes; the app's
    own clock (what it records and compares) stays real."""
    began_at, began = datetime.now(UTC), time.monotonic()
    if speed == 1:
        return lambda: datetime.now(UTC)
    return lambda: began_at + timedelta(seconds=(time.monotonic() - began) * speed)


class DemoSession:
    """One demo run's machinery: a fresh output folder, the local endpoint, Azurite and the
    Functions app under devhost, the labeled traffic and the live view. Each story (this
    module's `run_demo`, devhost/demo/decay_story.py) lands its data, waits for what it tells,
    and ends with `finish`, which writes the report."""

    def __init__(self, options: DemoOptions) -> None:
        import shutil

        from endpoint_server import start_local_endpoint
        from endpoint_server.server import new_key

        self.options = options
        self.began = time.monotonic()
        shutil.rmtree(options.output_dir, ignore_errors=True)
        self.local = options.output_dir / "local"
        (self.local / "endpoint").mkdir(parents=True)
        self.dataset: Dataset = load_dataset()
        options.console.print(
            "[bold]Starting the local endpoint, Azurite and the Functions app…[/bold]"
        )
        # A bad policy fails before anything starts.
        self.endpoint_names = demo_endpoints(options)
        self.endpoint_name = self.endpoint_names[0]  # the model's own: the first ring
        tracking_uri = f"sqlite:///{(self.local / 'mlflow.db').resolve()}"
        # One key, given to the endpoint server (its environment), the app and the traffic.
        self.endpoint_key = new_key()
        self.endpoint = start_local_endpoint(
            self.local / "endpoint",
            tracking_uri,
            subprocess_mode=True,
            max_lifetime=1800,
            key=self.endpoint_key,
        )
        self.traffic = TrafficGenerator(
            self.endpoint.url,
            self.endpoint_names,
            self.dataset,
            options.traffic_threads,
            self.endpoint_key,
        )
        self.host: Any = None
        self.runtime: Any = None
        self.story: Story | None = None
        self.dashboard_url: str | None = None

    def batch(self, name: str, start: int, stop: int, flip: bool = False) -> Path:
        """A CSV of the dataset's rows [start, stop) to land (docs: inputs.write_batch)."""
        return write_batch(self.dataset, self.options.output_dir / "data", name, start, stop, flip)

    def start(self) -> Story:
        from devhost.host.dev_host import DevHost
        from orchestrator.bootstrap import get_runtime, set_runtime

        options, console = self.options, self.options.console
        settings = demo_settings(options, self.endpoint.url, self.endpoint_key)
        self.host = DevHost(
            "function_app",
            settings,
            port=0,
            mlflow_ui=options.mlflow_ui,
            retry_delay_scale=0,
            max_deliveries=5,
            poll_interval=0.3,
            state_dir=self.local,
            clock=timer_clock(options.timer_speed),
        )
        set_runtime(None)  # the app's runtime is built from the settings devhost exported
        self.host.start()
        self.runtime = get_runtime()
        console.print(f"Functions app: {self.host.http_url} (key in {self.local / 'function-key'})")
        self.dashboard_url = f"{self.host.http_url}/dashboard?code={self.host.function_key}"
        # soft_wrap: the URL stays one line to copy, whatever the console's width.
        console.print(
            f"[bold]Dashboard (live while the demo runs):[/bold] {self.dashboard_url}",
            soft_wrap=True,
        )
        if self.host.mlflow_url:
            console.print(f"MLflow UI: {self.host.mlflow_url}")
        if options.timer_speed != 1:
            console.print(f"The app's timers run {options.timer_speed:g}x faster than real time.")
        self.traffic.start()
        self.story = Story(options, self.runtime, self.traffic, self.dashboard_url)
        return self.story

    @contextmanager
    def live(self) -> Iterator[Live | None]:
        """The live view while the story runs (a terminal only; else each line is printed)."""
        console = self.options.console
        live = Live(console=console, refresh_per_second=4) if console.is_terminal else None
        if live is not None:
            live.start()
        try:
            yield live
        finally:
            if live is not None:
                live.stop()

    def chapters(
        self, chapters: list[tuple[str, list[Path]]], live: Live | None
    ) -> list[PhaseResult]:
        """Each chapter's data landed, then followed until its promotion has finished."""
        assert self.story is not None
        phases: list[PhaseResult] = []
        newest = 0
        for name, files in chapters:
            self.story.phase = name
            self.story.say(f"== {name}")
            self.story.send_data(files)
            result = self.story.wait_for_outcome(newest, live)
            phases.append(result)
            newest = int(result.version or newest)
            self.story.say(f"v{result.version}: {result.outcome}")
        return phases

    def finish(
        self,
        phases: list[PhaseResult],
        milestones: list[Milestone] | None = None,
        model_audit: list[dict[str, Any]] | None = None,
    ) -> DemoResult:
        """Read back what happened, write the report; with keep_open, wait for Ctrl-C."""
        runtime, options = self.runtime, self.options
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
        rings_traffic = {name: self.served_on(name) for name in self.endpoint_names}
        endpoint_traffic = rings_traffic[self.endpoint_name]
        traffic_stats = self.traffic.snapshot()
        png, html = write_report(
            options.output_dir,
            phases,
            promotions,
            final,
            self.host.mlflow_url,
            dashboard_url=self.dashboard_url,  # written without its key (the report says where)
            key_file=self.local / "function-key",
            milestones=milestones,
        )
        if options.keep_open:
            self.traffic.stop()
            options.console.print(f"Report: {html}")
            options.console.print(
                f"The dashboard stays live at {self.dashboard_url}: Ctrl-C to stop.",
                soft_wrap=True,
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return DemoResult(
            phases=phases,
            final_status=final,
            promotions=promotions,
            traffic=traffic_stats,
            endpoint_traffic=endpoint_traffic,
            report_html=html,
            timeline_png=png,
            mlflow_url=self.host.mlflow_url,
            seconds=time.monotonic() - self.began,
            dashboard_url=self.dashboard_url,
            milestones=milestones or [],
            model_audit=model_audit or [],
            rings_traffic=rings_traffic,
        )

    def served_on(self, endpoint: str) -> dict[str, int]:
        """`endpoint`'s traffic, read from the endpoint server; {} while it does not exist (a
        later ring comes into being with its first deployment)."""
        import httpx

        from adapters.local_endpoint import LocalEndpoint

        listed = httpx.get(
            f"{self.endpoint.url}/endpoints",
            headers={"Authorization": f"Bearer {self.endpoint_key}"},
            timeout=10,
        )
        listed.raise_for_status()
        if endpoint not in {item["name"] for item in listed.json()}:
            return {}
        with LocalEndpoint(self.endpoint.url, endpoint, key=self.endpoint_key) as client:
            return client.traffic()

    def stop(self) -> None:
        from orchestrator.bootstrap import set_runtime

        self.traffic.stop()
        if self.host is not None:
            self.host.stop()
        self.endpoint.stop()
        set_runtime(None)


@contextmanager
def demo_session(options: DemoOptions) -> Iterator[DemoSession]:
    """A started DemoSession, stopped on the way out whatever happened."""
    session = DemoSession(options)
    try:
        session.start()
        yield session
    finally:
        session.stop()


def run_demo(options: DemoOptions) -> DemoResult:
    """The default story: a first model, a better one through the canary, a corrupted one
    caught by its canary gate."""
    with demo_session(options) as session:
        chapters: list[tuple[str, list[Path]]] = [
            (
                "first model",
                [session.batch("batch-a-1", 0, 120), session.batch("batch-a-2", 120, 240)],
            ),
            ("new data: a better model", [session.batch("batch-b", 240, 420)]),
            (
                "corrupted data: flipped labels",
                [session.batch("batch-c-flipped", 400, 569, flip=True)],
            ),
        ]
        with session.live() as live:
            phases = session.chapters(chapters, live)
        return session.finish(phases)
