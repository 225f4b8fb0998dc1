"""Settling an Event Hubs batch so that one bad event neither blocks nor loses the others.

Event Hubs has no redelivery of single events: once the function returns (or its retry policy
gives up) the checkpoint moves past the whole batch. So a batch is settled here, inside the
invocation, before the checkpoint moves: every event is either handled or dead-lettered with
its reason.

`settle` hands the whole batch to a handler, retrying a transient failure a bounded number of
times with backoff. A batch that still fails is split in halves, each half handled on its own,
down to single events; a single event that still fails is dead-lettered with the error. A
failure the handler marks as permanent (`InvalidMessage`) is not retried, only split until the
event that causes it is found. Only a dead letter that cannot be written escapes (the trigger
then raises and the batch is redelivered, so nothing is lost).

A batch of n events that fails throughout costs at most 3n + attempts - 2 handler calls (the
whole batch `attempts` times, every other part of the split once, each single event once more).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from orchestrator.messages import InvalidMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

BatchHandler = Callable[[Sequence[T]], None]
DeadLetter = Callable[[T, str], None]


@dataclass
class Settled(Generic[T]):
    """What became of a batch: the handler calls made, the events dead-lettered and why."""

    calls: int = 0
    handled: int = 0
    dead_lettered: list[tuple[T, str]] = field(default_factory=list)


def describe(error: BaseException) -> str:
    if isinstance(error, InvalidMessage):
        return error.reason
    return f"{type(error).__name__}: {error}"[:2000]


def settle(
    items: Sequence[T],
    handle: BatchHandler[T],
    dead_letter: DeadLetter[T],
    *,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Settled[T]:
    """Handle `items`; every item ends handled or dead-lettered (see the module docstring).

    `attempts` bounds the tries of the whole batch (the backoff doubles between them); each
    half is tried once and each single event once more before it is dead-lettered, so an
    event is dead-lettered only after it failed alone and in every batch that held it.
    """
    result: Settled[T] = Settled()
    if not items:
        return result
    error = _attempt(items, handle, result, attempts, backoff_seconds, sleep)
    if error is not None:
        _split(items, handle, dead_letter, result, error)
    return result


def _attempt(
    items: Sequence[T],
    handle: BatchHandler[T],
    result: Settled[T],
    attempts: int,
    backoff_seconds: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> BaseException | None:
    """None when handled; else the last error (a permanent one is not tried again)."""
    error: BaseException | None = None
    for attempt in range(max(1, attempts)):
        if attempt and backoff_seconds > 0:
            sleep(backoff_seconds * 2 ** (attempt - 1))
        result.calls += 1
        try:
            handle(items)
        except InvalidMessage as exc:
            return exc
        except Exception as exc:  # transient until proven otherwise: tried again, then split
            log.warning("a batch of %d failed (try %d): %s", len(items), attempt + 1, exc)
            error = exc
        else:
            result.handled += len(items)
            return None
    return error


def _split(
    items: Sequence[T],
    handle: BatchHandler[T],
    dead_letter: DeadLetter[T],
    result: Settled[T],
    error: BaseException,
) -> None:
    if len(items) == 1:
        # The event failed in every batch that held it; a transient error gets one more try
        # alone (the batch's may have been another event's), a permanent one is final.
        if not isinstance(error, InvalidMessage):
            last = _attempt(items, handle, result, attempts=1)
            if last is None:
                return
            error = last
        reason = describe(error)
        dead_letter(items[0], reason)  # a dead letter that cannot be written raises
        result.dead_lettered.append((items[0], reason))
        return
    middle = len(items) // 2
    for half in (items[:middle], items[middle:]):
        half_error = _attempt(half, handle, result, attempts=1)
        if half_error is not None:
            _split(half, handle, dead_letter, result, half_error)
