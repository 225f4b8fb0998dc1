"""The benchmarks behind the README's performance figures still run and print their ratios.

Tiny counts: this checks that the code runs end to end (Azurite, the real handlers, the local
endpoint), not the figures themselves, which `make bench` measures side by side.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow

RATIO = r"([0-9]+\.[0-9]+)"


def test_state_store_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_state_store

    bench_state_store.main(count=5)
    assert re.search(rf"transitions / raw writes.*{RATIO}", capsys.readouterr().out)


def test_retrain_handler_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_retrain_handler

    bench_retrain_handler.main(single=5, batches=1, batch_size=20)
    out = capsys.readouterr().out
    assert re.search(rf"one-at-a-time events / raw transitions.*{RATIO}", out)
    assert re.search(rf"batched events / raw transitions.*{RATIO}", out)


def test_cold_start_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_cold_start

    ratio = bench_cold_start.main(rounds=1)
    assert ratio > 0
    assert re.search(rf"cold start ratio \(ours / bare\): {RATIO}", capsys.readouterr().out)


def test_endpoint_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_endpoint

    assert bench_endpoint.main(["--requests", "40", "--threads", "2", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"ratio routed/pinned: req/s {RATIO}, p50 {RATIO}", out)
