"""`make demo` and the dashboard: its report links to the dashboard it printed at start
(escaped), and with --approve-in-dashboard the story leaves each approval to a person there."""

from __future__ import annotations

import io

from rich.console import Console

from devhost.demo.report import write_report
from devhost.demo.story import APPROVER, DemoOptions, Story


def test_the_report_links_to_the_dashboard(tmp_path):
    url = "http://127.0.0.1:8123/api/dashboard?code=k&x=<y>"
    _, html = write_report(tmp_path, [], {}, {}, None, dashboard_url=url)
    text = html.read_text()
    assert "<h2>Dashboard</h2>" in text
    assert "<a href='http://127.0.0.1:8123/api/dashboard?code=k&amp;x=&lt;y&gt;'>" in text

    _, html = write_report(tmp_path, [], {}, {}, None)
    assert "Dashboard" not in html.read_text()


class NoRuntime:
    """Sending an approval would need the runtime's settings and bus: none here."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the story used the runtime ({name}) instead of waiting")


def test_with_approve_in_dashboard_the_story_asks_a_person_instead_of_approving():
    console = Console(file=io.StringIO(), force_terminal=False)
    options = DemoOptions(console=console, approve_in_dashboard=True)
    url = "http://127.0.0.1:8123/api/dashboard?code=k"
    story = Story(options, NoRuntime(), traffic=None, dashboard_url=url)  # type: ignore[arg-type]
    awaiting = {"id": "p1", "status": "awaiting_approval", "candidate_version": "2"}

    story.approve_when_asked({"active_promotion": awaiting})
    story.approve_when_asked({"active_promotion": awaiting})  # said once per promotion

    [line] = [line for line in story.log if "awaits approval" in line]
    assert f"signed in as {APPROVER} ({url})" in line
