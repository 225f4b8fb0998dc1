"""`make demo`: the whole loop on one machine, no Azure subscription.

The entry point of `python -m devhost.demo [--story default|rings|decay] [--output demo-output]
[--no-mlflow-ui] [--approve-in-dashboard] [--keep-open]`; the default story is
devhost/demo/story.py, the second (shadow first, two rings, then a decay that retrains on its
own; `decay` is its earlier name) devhost/demo/decay_story.py. It prints the app's live
dashboard at start (docs/dashboard.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from devhost.demo.decay_story import run_decay_demo
from devhost.demo.story import REPO, DemoOptions, DemoResult, run_demo

STORIES: dict[str, Callable[[DemoOptions], DemoResult]] = {
    "default": run_demo,  # canary, a better model, a corrupted one rolled back
    # Shadow first, a second local endpoint as a second ring, then a decay that retrains on
    # its own; `decay` is its earlier name, kept for `make demo STORY=decay`.
    "rings": run_decay_demo,
    "decay": run_decay_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--story", choices=sorted(STORIES), default="default")
    parser.add_argument("--output", type=Path, default=REPO / "demo-output")
    parser.add_argument("--no-mlflow-ui", action="store_true")
    parser.add_argument(
        "--approve-in-dashboard",
        action="store_true",
        help="wait for a person to approve each candidate in the dashboard (30 min per chapter)",
    )
    parser.add_argument(
        "--keep-open",
        action="store_true",
        help="keep the app and its dashboard up after the story, until Ctrl-C",
    )
    arguments = parser.parse_args(argv)
    options = DemoOptions(
        output_dir=arguments.output.resolve(),
        mlflow_ui=not arguments.no_mlflow_ui,
        approve_in_dashboard=arguments.approve_in_dashboard,
        keep_open=arguments.keep_open,
    )
    if arguments.approve_in_dashboard:
        options.phase_timeout = 1800.0  # a person reads the evidence before answering
    result = STORIES[arguments.story](options)
    console = options.console
    console.print()
    for phase in result.phases:
        console.print(
            f"[bold]{phase.name}[/bold]: v{phase.version} {phase.outcome} ({phase.seconds:.0f} s)"
        )
    for milestone in result.milestones:
        console.print(f"{milestone.seconds:6.1f} s  {milestone.what}: {milestone.detail}")
    production = result.final_status.get("production") or {}
    console.print(
        f"Production now: v{production.get('version')}; endpoint traffic {result.endpoint_traffic}"
    )
    for endpoint, traffic in list(result.rings_traffic.items())[1:]:
        console.print(f"Ring {endpoint}: traffic {traffic}")
    console.print(f"Report: {result.report_html}  (timeline: {result.timeline_png})")
    console.print(f"The demo took {result.seconds:.0f} s.")
    if result.mlflow_url:
        console.print(f"MLflow UI was at {result.mlflow_url}; it stopped with the demo.")
    if result.dashboard_url:
        console.print(
            f"The dashboard was at {result.dashboard_url}; it stopped with the demo.",
            soft_wrap=True,
        )
    return 0
