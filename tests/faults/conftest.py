"""Fixtures for the bad-input and security tests: a tally of the inputs each test tried
(printed when the test ends: `pytest tests/faults -s`, and recorded with the other fault
figures in build/reliability-figures.json; see `flow_harness.record_figures`). The runtime
fixture, `make_runtime`, is tests/conftest.py's."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.faults.flow_harness import record_figures


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    yield counts
    total = sum(counts.values())
    print(
        f"\nFAULTS {request.node.name}: {total} inputs {json.dumps(dict(sorted(counts.items())))}"
    )
    # The total only: the split by kind moves between runs (hypothesis's generation order).
    record_figures(request.node.nodeid, {"inputs_tried": total})
