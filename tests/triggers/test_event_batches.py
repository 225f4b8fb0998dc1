"""Settling an Event Hubs batch (triggers/event_batches.py): every event ends handled or
dead-lettered with its reason, transient failures are retried (bounded), one bad event never
holds back or loses the others."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.messages import InvalidMessage
from triggers.event_batches import settle


class Handler:
    """Fails any batch holding a poison item; `flaky` calls fail first (a transient outage)."""

    def __init__(self, poison: set[int] = frozenset(), flaky: int = 0, permanent: bool = False):
        self.poison = set(poison)
        self.flaky = flaky
        self.permanent = permanent
        self.calls: list[list[int]] = []
        self.handled: list[int] = []

    def __call__(self, batch: Sequence[int]) -> None:
        self.calls.append(list(batch))
        if self.flaky:
            self.flaky -= 1
            raise ConnectionError("storage unreachable")
        bad = self.poison.intersection(batch)
        if bad:
            if self.permanent:
                raise InvalidMessage(f"item {min(bad)} refused")
            raise RuntimeError(f"item {min(bad)} breaks the handler")
        self.handled.extend(batch)


def run(items: list[int], handler: Handler, **options):  # type: ignore[no-untyped-def]
    dead: list[tuple[int, str]] = []
    sleeps: list[float] = []
    result = settle(
        items, handler, lambda item, reason: dead.append((item, reason)), sleep=sleeps.append,
        **options,
    )  # fmt: skip
    return result, dead, sleeps


def test_a_good_batch_is_one_call():
    handler = Handler()
    result, dead, sleeps = run(list(range(100)), handler)
    assert handler.calls == [list(range(100))]
    assert (result.calls, result.handled, dead, sleeps) == (1, 100, [], [])


def test_a_transient_failure_is_retried_with_backoff_and_nothing_is_dead_lettered():
    handler = Handler(flaky=2)
    _, dead, sleeps = run(list(range(10)), handler, attempts=3, backoff_seconds=1.0)
    assert dead == []
    assert sorted(handler.handled) == list(range(10))
    assert sleeps == [1.0, 2.0]
    assert len(handler.calls) == 3


def test_one_poison_event_is_dead_lettered_with_its_reason_and_the_others_are_handled():
    handler = Handler(poison={5})
    result, dead, _ = run(list(range(16)), handler)
    assert dead == [(5, "RuntimeError: item 5 breaks the handler")]
    assert sorted(handler.handled) == [n for n in range(16) if n != 5]
    # The whole batch 3 times, then halves down to the event: 4 levels, 2 halves each, and
    # one more try of the event alone.
    assert result.calls == 3 + 2 * 4 + 1


def test_a_permanent_failure_is_not_retried_only_split():
    handler = Handler(poison={0}, permanent=True)
    result, dead, sleeps = run([0, 1, 2, 3], handler)
    assert dead == [(0, "item 0 refused")]
    assert sleeps == []
    assert result.calls == 1 + 2 + 2  # the batch, its halves, the first half's halves


def test_when_everything_fails_every_event_is_dead_lettered_once_in_bounded_calls():
    handler = Handler(flaky=10**6)
    result, dead, _ = run(list(range(64)), handler, attempts=3)
    assert sorted(item for item, _ in dead) == list(range(64))
    assert all(reason == "ConnectionError: storage unreachable" for _, reason in dead)
    assert result.calls == 3 * 64 + 1  # the bound: the split tree, the retries, one more alone


def test_a_dead_letter_that_cannot_be_written_raises():
    def broken(item: int, reason: str) -> None:
        raise ConnectionError("dead-letter store down")

    with pytest.raises(ConnectionError, match="dead-letter store down"):
        settle([1, 2], Handler(poison={1}), broken, sleep=lambda _: None)


def test_an_empty_batch_calls_nothing():
    handler = Handler()
    result, dead, _ = run([], handler)
    assert handler.calls == [] and dead == [] and result.calls == 0


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    size=st.integers(min_value=1, max_value=60),
    poison=st.sets(st.integers(min_value=0, max_value=59), max_size=8),
    flaky=st.integers(min_value=0, max_value=2),
    permanent=st.booleans(),
)
def test_every_event_ends_handled_or_dead_lettered_exactly_as_it_deserves(
    size: int, poison: set[int], flaky: int, permanent: bool
) -> None:
    poison = {n for n in poison if n < size}
    handler = Handler(poison=poison, flaky=flaky, permanent=permanent)
    result, dead, _ = run(list(range(size)), handler, attempts=3)
    dead_items = [item for item, _ in dead]
    assert sorted(dead_items) == sorted(poison)  # each poison event once, nothing else
    assert sorted(handler.handled) == sorted(set(range(size)) - poison)  # each good one once
    assert all(reason.strip() for _, reason in dead)
    assert result.calls <= 2 * size - 1 + 2 + len(poison)
