"""A million data keys seen: the model's aggregate stays small (< 64 KB) whatever arrives,
because the keys and the pending data live in the data ledger, the message ids it remembers
are short digests, a job carries its manifest's reference, and every history is bounded.

The million keys are in the in-memory data ledger (filling Azurite with them is
benchmarks/bench_data_ledger.py's job); everything else is the production wiring."""

from __future__ import annotations

import pytest

from orchestrator.aggregate import SEEN_MESSAGES_KEPT
from retrain.commands import DataItem
from retrain.state import MAX_RUNS
from tests.fakes import DATA_ACCOUNT, fake_runtime, policy_yaml
from tests.faults.flow_harness import record_figures
from triggers.envelopes import data_landed_envelope

LIMIT = 64 * 1024
KEYS = 1_000_000
EVENTS = 10  # per window, 1,000 items each


def items(start: int, count: int) -> list[DataItem]:
    # Long names and keys, as a deep folder layout gives them.
    folder = "year=2026/month=03/day=02/source=clickstream/region=westeurope"
    return [
        DataItem(
            uri=f"{DATA_ACCOUNT}/training-data/churn/{folder}/part-{n:09d}.csv",
            key=f"blob:training-data/churn/{folder}/part-{n:09d}.csv@0x8DC{n:012X}",
            rows=1000,
        )
        for n in range(start, start + count)
    ]


def test_a_million_keys_seen_keep_the_aggregate_under_64_kb(
    request: pytest.FixtureRequest,
) -> None:
    retrain = "{debounce: 1s, cooldown: 0s, max_items_per_event: 1000}"
    w = fake_runtime(policy_yaml("churn", retrain=retrain))
    w.ledger.seed_keys("churn", (item.key for item in items(0, KEYS)), w.clock())
    largest = 0
    next_item = KEYS
    # More windows than the history keeps, each of many events: every message id is new.
    for generation in range(MAX_RUNS + 5):
        for _ in range(EVENTS):
            envelope = data_landed_envelope("churn", items(next_item, 1000), "eventhub")
            assert w.handle(envelope).status == "applied"
            next_item += 1000
            largest = max(largest, len(w.aggregate("churn").model_dump_json()))
        # The million old keys are still duplicates.
        old = data_landed_envelope("churn", items(generation * 1000, 1000), "eventhub")
        assert w.handle(old).status == "ignored"
        w.clock.advance(1)
        w.deliver_due()
        w.training.finish(w.training.jobs[-1], str(generation + 1))
        w.run(until=lambda: w.aggregate("churn").retrain.current_job is None)
        largest = max(largest, len(w.aggregate("churn").model_dump_json()))

    aggregate = w.aggregate("churn")
    assert len(aggregate.retrain.runs) == MAX_RUNS
    assert all(run.data_count == EVENTS * 1000 for run in aggregate.retrain.runs)
    assert len(aggregate.seen_messages) <= SEEN_MESSAGES_KEPT
    assert len(w.ledger.keys["churn"]) == next_item  # every key remembered, outside
    size = len(aggregate.model_dump_json())
    print(f"\nFAULTS 1M keys: aggregate {size} bytes now, {largest} at most (limit {LIMIT})")
    record_figures(
        request.node.nodeid,
        {"keys_seen": len(w.ledger.keys["churn"]), "aggregate_bytes_max": largest},
    )
    assert largest < LIMIT
