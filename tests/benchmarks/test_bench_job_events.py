"""benchmarks/bench_job_events.py still runs end to end and prints its table and the wait saved (one
short job; the figures themselves come from `make bench`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.settings import APP_ROOT

pytestmark = pytest.mark.slow


def test_job_events_benchmark_runs() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", "from benchmarks import bench_job_events as b; b.main((9.5,))"],
        cwd=APP_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert re.search(r"^\s+9\.5\s+\d+\.\d\s+\d+\.\d{4}$", completed.stdout, flags=re.MULTILINE)
    assert re.search(r"events save \d+ s of the \d+ s mean wait", completed.stdout)
