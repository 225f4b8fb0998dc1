"""End to end: the `make demo` story (its demo policy's short timings, no MLflow UI) on real
Azurite, devhost, the local pipeline runner, the local endpoint and MLflow. Three models: the
first goes to production, a better one walks the canary to production, and one trained on
flipped labels (which fools the offline evaluation, whose holdout is flipped too) is caught by
its canary gate and rolled back."""

from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from rich.console import Console

from devhost.demo.story import MODEL, DemoOptions, DemoResult, run_demo
from domain.naming import deployment_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the whole loop, on 2 cores

DASHBOARD_LINE = re.compile(r"Dashboard \(live while the demo runs\): (\S+)")
FIRST_CHAPTER = "== first model"
LAST_OUTCOME = re.compile(r"v3: \w+")


@dataclass
class Look:
    """One read of the dashboard while the demo ran: what the demo had printed by then, and
    what the state route answered."""

    printed: str
    status: int
    active: dict[str, Any] | None = None


@dataclass
class DashboardWatcher:
    """What a person does with `make demo`: read the dashboard's URL where the demo prints it,
    open the page, and keep reading the state the page polls, through that very URL, while the
    story runs."""

    output: io.StringIO
    stop: threading.Event = field(default_factory=threading.Event)
    url: str | None = None
    page_status: int | None = None
    looks: list[Look] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.wait(3):
                printed = self.output.getvalue()
                found = DASHBOARD_LINE.search(printed)
                if not found:
                    continue
                try:
                    self.look(client, found.group(1), printed)
                except httpx.HTTPError as exc:  # the app stops with the demo
                    self.errors.append(f"{len(printed)}: {exc!r}")

    def look(self, client: httpx.Client, url: str, printed: str) -> None:
        parts = urlsplit(url)
        [key] = parse_qs(parts.query)["code"]
        if self.page_status is None:
            self.page_status = client.get(url).status_code
            self.url = url
        state = client.get(
            f"{parts.scheme}://{parts.netloc}{parts.path}/state",
            headers={"x-functions-key": key},
        )
        models = state.json()["models"] if state.status_code == 200 else []
        [view] = [model for model in models if model["model"] == MODEL] or [None]
        active = view["status"].get("active_promotion") if view else None
        self.looks.append(Look(printed, state.status_code, active))


@pytest.fixture(scope="module")
def watched_demo(tmp_path_factory) -> tuple[DemoResult, str, DashboardWatcher]:
    output = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    options = DemoOptions(
        output_dir=output,
        mlflow_ui=False,
        phase_timeout=240,
        console=Console(file=printed, force_terminal=False),
    )
    watcher = DashboardWatcher(printed)
    thread = threading.Thread(target=watcher.run, name="dashboard-watcher", daemon=True)
    thread.start()
    try:
        result = run_demo(options)
    finally:
        watcher.stop.set()
        thread.join(timeout=60)
    return result, printed.getvalue(), watcher


@pytest.fixture(scope="module")
def demo(watched_demo) -> DemoResult:
    return watched_demo[0]


def test_each_chapter_ends_as_the_story_says(demo):
    outcomes = [(phase.version, phase.outcome) for phase in demo.phases]
    assert outcomes == [("1", "completed"), ("2", "completed"), ("3", "rolled_back")]


def test_the_better_model_serves_all_traffic(demo):
    production = demo.final_status["production"]
    assert production["version"] == "2"
    assert demo.final_status["last_known_good"]["version"] == "2"
    assert demo.final_status["active_promotion"] is None
    assert demo.endpoint_traffic == {deployment_name(MODEL, "2"): 100}


def audit_of(demo, version: str) -> list[dict]:
    [phase] = [phase for phase in demo.phases if phase.version == version]
    return demo.promotions[phase.promotion_id]["audit"]


def test_the_canary_walked_every_step_with_passing_gates(demo):
    audit = audit_of(demo, "2")
    weights = [
        record["detail"]["traffic"]
        for record in audit
        if record["to_state"] == "canary" and "traffic" in record["detail"]
    ]
    assert weights == [10, 25, 50]
    # Every canary step was looked at (one look per step of the sequential design: an early
    # look may be undecided and go on to the next step); none failed; the gates passed by the
    # end, and so did staging and the production bake.
    looked = {record["detail"]["step"] for record in audit if record["action"] == "gate.look"}
    assert looked >= {"canary-1", "canary-2", "canary-3"}
    assert not [record for record in audit if record["action"] == "gate.failed"]
    passed = {record["detail"]["step"] for record in audit if record["action"] == "gate.passed"}
    assert passed >= {"staging", "bake"} and passed & {"canary-1", "canary-2", "canary-3"}
    approvals = [record for record in audit if record["to_state"] == "deploying"]
    assert approvals and approvals[0]["actor"] == "demo-lead@example.com"
    assert audit[-1]["to_state"] == "completed"


def test_the_flipped_label_model_failed_its_canary_and_was_rolled_back(demo):
    audit = audit_of(demo, "3")
    failed = [record for record in audit if record["action"] == "gate.failed"]
    assert failed, "the canary gate never failed"
    evidence = {item["gate"]: item for item in failed[-1]["detail"]["evidence"]}
    accuracy = evidence["canary:accuracy"]
    assert accuracy["outcome"] == "fail"
    assert accuracy["values"]["canary"] < accuracy["values"]["production"] - 0.3
    assert min(accuracy["samples"].values()) >= 120  # judged on enough samples, not on noise
    states = [record["to_state"] for record in audit if record["to_state"]]
    assert states[-2:] == ["rolling_back", "rolled_back"]


def test_traffic_was_served_and_a_report_was_written(demo):
    assert demo.traffic["sent"] > 1000
    served = demo.traffic["served"]
    assert served.get(deployment_name(MODEL, "3"), 0) > 0  # the canary really took traffic
    assert demo.timeline_png.stat().st_size > 10_000
    assert "breast-cancer-retrain" in demo.report_html.read_text()


def test_the_dashboard_url_is_printed_first_and_answers_while_the_story_runs(watched_demo):
    demo, printed, watcher = watched_demo
    # Printed as the demo starts, before the first chapter's data lands, on one line to copy.
    found = DASHBOARD_LINE.search(printed)
    assert found, printed[:2000]
    assert found.start() < printed.index(FIRST_CHAPTER)
    assert found.group(1) == demo.dashboard_url
    assert "/api/dashboard?code=" in found.group(1)
    # The page opens at that URL, and its state route answered every time it was read while
    # the story ran (from the first chapter until the last promotion's outcome was printed),
    # with the model's promotion in progress on some of those reads.
    assert watcher.page_status == 200
    during = [
        look
        for look in watcher.looks
        if FIRST_CHAPTER in look.printed and not LAST_OUTCOME.search(look.printed)
    ]
    assert len(during) >= 5, (watcher.looks, watcher.errors)
    assert [look.status for look in during] == [200] * len(during), watcher.errors
    assert [look for look in during if look.active], "no read showed a promotion under way"
    # The report links to it, without the key.
    report = demo.report_html.read_text()
    [key] = parse_qs(urlsplit(demo.dashboard_url).query)["code"]
    assert demo.dashboard_url.split("?")[0] in report
    assert key not in report
