"""`make demo` and the dashboard: its report links to the dashboard it printed at start
(escaped, without the function key), and with --approve-in-dashboard the story leaves each
approval to a person there."""

from __future__ import annotations

import io

from rich.console import Console

from devhost.demo.report import write_report
from devhost.demo.story import APPROVER, DemoOptions, PhaseResult, Story


def test_the_report_links_to_the_dashboard_without_its_key(tmp_path):
    """A report is a file anyone may be sent: it says where the function key is, never the key."""
    url = "http://127.0.0.1:8123/api/dashboard?code=secret-key&x=<y>"
    key_file = tmp_path / "local" / "function-key"
    _, html = write_report(tmp_path, [], {}, {}, None, dashboard_url=url, key_file=key_file)
    text = html.read_text()
    assert "<h2>Dashboard</h2>" in text
    assert "<a href='http://127.0.0.1:8123/api/dashboard?x=%3Cy%3E'>" in text
    assert "secret-key" not in text and str(key_file) in text

    _, html = write_report(tmp_path, [], {}, {}, None)
    assert "Dashboard" not in html.read_text()


def test_every_field_of_the_report_is_escaped(tmp_path):
    phase = PhaseResult(
        name="<i>first</i>",
        version="1<",
        outcome="completed",
        promotion_id="p1",
        seconds=3.0,
    )
    record = {
        "time": "2026-12-02T10:00:00+00:00",
        "action": "promotion.rolled_back",
        "from_state": "canary",
        "to_state": "rolled_back",
        "actor": "<script>alert(1)</script>",
        "detail": {"cause": "<img src=x onerror=alert(1)>"},
    }
    _, html = write_report(tmp_path, [phase], {"p1": {"audit": [record]}}, {}, None)
    text = html.read_text()
    assert "<script>" not in text and "<img src=x" not in text and "<i>first" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


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
