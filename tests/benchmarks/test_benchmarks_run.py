"""The benchmarks behind the README's performance figures still run and print their ratios.

Tiny counts: this checks that the code runs end to end (Azurite, the real handlers, the local
endpoint), not the figures themselves, which `make bench` measures side by side. Each runs in
its own interpreter, as `make bench` runs it: a benchmark sets process-wide state (MLflow's
tracking and registry URIs) that must not leak into the tests that share a worker.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.settings import APP_ROOT

pytestmark = pytest.mark.slow

RATIO = r"([0-9]+\.[0-9]+)"


def run(call: str) -> str:
    module = call.split(".", 1)[0]
    completed = subprocess.run(
        [sys.executable, "-c", f"from benchmarks import {module}; {call}"],
        cwd=APP_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.azurite  # the benchmark starts its own emulator
def test_state_store_benchmark() -> None:
    out = run("bench_state_store.main(count=5)")
    assert re.search(rf"transitions / raw writes: {RATIO}", out)


@pytest.mark.azurite  # the benchmark starts its own emulator
def test_retrain_handler_benchmark() -> None:
    out = run("bench_retrain_handler.main(single=5, batches=1, batch_size=20)")
    assert re.search(rf"one-at-a-time events / raw transitions: {RATIO}", out)
    assert re.search(rf"batched events / raw transitions: {RATIO}", out)


def test_cold_start_benchmark() -> None:
    out = run("bench_cold_start.main(rounds=1)")
    assert re.search(rf"cold start ratio \(ours / bare\): {RATIO}", out)


def test_endpoint_benchmark() -> None:
    out = run("bench_endpoint.main(['--requests', '40', '--threads', '2', '--rounds', '2'])")
    assert re.search(rf"ratio routed/pinned: req/s {RATIO}, p50 {RATIO}", out)


@pytest.mark.azurite  # the benchmark starts its own emulator
def test_data_ledger_benchmark() -> None:
    out = run("bench_data_ledger.main(levels=(100, 1000), events=5, storm=40, workers=2)")
    assert re.search(rf"rate at 1,000 keys / rate at 100 keys: {RATIO}", out)
    assert re.search(rf"per-event latency, last 4 / first 4: {RATIO}", out)
    assert re.search(rf"requests per event, first 4 / last 4: {RATIO} / {RATIO}", out)
    assert "window close: 1 job(s) on 40 distinct blobs" in out
    assert "pending after: 0" in out


@pytest.mark.azurite  # the benchmark starts its own emulators
def test_data_ledger_storm_benchmark_compares_with_the_code_before() -> None:
    out = run("bench_data_ledger.storm_main(40, 2)")
    assert out.count("window close: 1 job(s) on 40 distinct blobs") == 2
    assert re.search(rf"storm wall time, now / before: {RATIO}", out)


def test_canary_gate_benchmark() -> None:
    out = run("bench_canary_gate.main(runs=100, latency_runs=10)")
    assert "accuracy gate" in out


def test_canary_stats_benchmark() -> None:
    out = run("bench_canary_stats.main(runs=5, volumes=(3000,))")
    assert "| 3,000 | identical to production |" in out
    assert "| 3,000 | same median, p95 doubled |" in out
