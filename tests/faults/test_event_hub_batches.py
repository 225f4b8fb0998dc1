"""Event Hubs batches mixing valid data-ready events, Event Grid BlobCreated events and
garbage, through the real `data_events` trigger with real `func.EventHubEvent` objects (and,
at the end, batches whose handling keeps failing).

Every valid event is kept (pending in the model's data ledger), every invalid one is one
dead-letter record with a reason, bad input never raises, and a batch is one handled command
per model and at most one transition write, never one per event.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.azurite import Azurite
from orchestrator.bootstrap import Runtime
from tests.faults.flow_harness import record_figures
from tests.faults.support import (
    PATHOLOGICAL_JSON,
    DeadLetterSpy,
    SaveSpy,
    TrainingBackend,
    dead_letter_spy,
    fuzz,
    installed,
    user_function,
)
from tests.harness import policy_yaml
from triggers import data

pytestmark = pytest.mark.azurite

data_events = user_function(data.data_events)

MODELS = ("churn", "fraud")  # data lands in training-data/<model>/
CONTAINER = "training-data"
ACCOUNT = "https://acct.blob.core.windows.net"


NONCE = "NONCE"  # replaced per example, so the valid events are always new data


@dataclass(frozen=True)
class Event:
    kind: str
    body: bytes
    items: tuple[tuple[str, str], ...] = ()  # (model, dedup key) when valid

    @property
    def valid(self) -> bool:
        return bool(self.items)

    @property
    def dead_lettered(self) -> bool:
        # A blob under no model's prefix is no one's data, not a bad event: logged, skipped.
        return not self.valid and self.kind != "event-grid-outside-prefixes"

    def fresh(self, nonce: str) -> Event:
        return Event(
            self.kind,
            self.body.replace(NONCE.encode(), nonce.encode()),
            tuple((model, key.replace(NONCE, nonce)) for model, key in self.items),
        )

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, {self.body[:160]!r}{'...' if len(self.body) > 160 else ''})"


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def data_ready(model: str, event_id: str, rows: int | None) -> dict[str, object]:
    document: dict[str, object] = {
        "model": model,
        "data_uri": f"{ACCOUNT}/{CONTAINER}/{model}/{event_id}.csv",
        "event_id": event_id,
    }
    if rows is not None:
        document["rows"] = rows
    return document


def blob_created(container: str, path: str, etag: str, event_type: str = "") -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "eventType": event_type or "Microsoft.Storage.BlobCreated",
        "subject": f"/blobServices/default/containers/{container}/blobs/{path}",
        "eventTime": "2026-01-05T12:00:00Z",
        "data": {"url": f"{ACCOUNT}/{container}/{path}", "eTag": etag, "contentLength": 10},
    }


names = st.text(alphabet="abcdefghij0123456789-_", min_size=1, max_size=12)
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    """One event; NONCE in it is replaced by the test, so valid ones are new data."""
    nonce = NONCE
    kind = draw(
        st.sampled_from(
            [
                "data-ready",
                "blob-created",
                "blob-created-array",
                "bytes",
                "pathological-json",
                "json-junk",
                "data-ready-unknown-model",
                "data-ready-broken",
                "event-grid-other-type",
                "event-grid-not-a-blob",
                "event-grid-outside-prefixes",
                "event-grid-broken",
                "empty-array",
                "array-with-one-bad-entry",
            ]
        )
    )
    model = draw(st.sampled_from(MODELS))
    name = f"{draw(names)}-{nonce}"
    if kind == "data-ready":
        rows = draw(st.none() | st.integers(min_value=0, max_value=10**9))
        return Event(kind, encode(data_ready(model, name, rows)), ((model, f"event:{name}"),))
    if kind == "blob-created":
        path = f"{model}/{name}.csv"
        key = f"blob:{CONTAINER}/{path}@0x{nonce}"
        return Event(kind, encode(blob_created(CONTAINER, path, f"0x{nonce}")), ((model, key),))
    if kind == "blob-created-array":
        targets = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3))
        paths = [f"{target}/{name}-{i}.csv" for i, target in enumerate(targets)]
        documents = [blob_created(CONTAINER, path, f"0x{nonce}") for path in paths]
        items = tuple((path.split("/")[0], f"blob:{CONTAINER}/{path}@0x{nonce}") for path in paths)
        return Event(kind, encode(documents), items)
    if kind == "bytes":
        return Event(kind, draw(st.binary(max_size=200)))
    if kind == "pathological-json":
        return Event(kind, draw(st.sampled_from(PATHOLOGICAL_JSON)))
    if kind == "json-junk":
        junk = draw(json_junk.filter(lambda v: not isinstance(v, dict) or "model" not in v))
        return Event(kind, encode(junk))
    if kind == "data-ready-unknown-model":
        document = data_ready(draw(names.filter(lambda m: m not in MODELS)), name, None)
        return Event(kind, encode(document))
    if kind == "data-ready-broken":
        document = data_ready(model, name, 5)
        field = draw(st.sampled_from(["model", "data_uri", "event_id", "rows", "extra"]))
        document[field] = draw(st.sampled_from(["", None, [], {"a": 1}, -1, 1.5]))
        if field in ("model", "data_uri", "event_id") and document[field] == -1:
            document[field] = ""
        if field == "rows" and document[field] is None:  # rows may be absent or null
            document[field] = -1
        return Event(kind, encode(document))
    if kind == "event-grid-other-type":
        event_type = draw(st.sampled_from(["Microsoft.Storage.BlobDeleted", "Custom.Thing", ""]))
        document = blob_created(CONTAINER, f"{model}/{name}.csv", "0x1", event_type or " ")
        return Event(kind, encode(document))
    if kind == "event-grid-not-a-blob":
        document = blob_created(CONTAINER, f"{model}/{name}.csv", "0x1")
        document["subject"] = draw(st.sampled_from(["", "/containers/x", "blobs/y", name]))
        return Event(kind, encode(document))
    if kind == "event-grid-outside-prefixes":
        container, path = draw(
            st.sampled_from([("other-data", f"{model}/{name}"), (CONTAINER, f"elsewhere/{name}")])
        )
        return Event(kind, encode(blob_created(container, path, "0x1")))
    if kind == "event-grid-broken":
        document = blob_created(CONTAINER, f"{model}/{name}.csv", "0x1")
        field = draw(st.sampled_from(["id", "subject", "data"]))
        if draw(st.booleans()):
            del document[field]
        else:
            document[field] = draw(st.sampled_from([None, [], 7]))
        return Event(kind, encode(document))
    if kind == "empty-array":
        return Event(kind, b"[]")
    # One bad entry makes the whole event unusable: it is dead-lettered as a unit.
    good = data_ready(model, name, None)
    return Event(kind, encode([good, {"model": model}]))


batches = st.lists(events(), min_size=1, max_size=12)


@pytest.fixture
def dead_letters(azurite: Azurite) -> DeadLetterSpy:
    return dead_letter_spy(azurite)


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], dead_letters: DeadLetterSpy) -> Runtime:
    return make_runtime(
        {model: policy_yaml(model, retrain="{debounce: 1h}") for model in MODELS},
        training=TrainingBackend(),
        dead_letters=dead_letters,
        DataStorage__blobServiceUri=ACCOUNT,  # the data account the events' URLs name
    )


@pytest.fixture
def saves(runtime: Runtime) -> SaveSpy:
    return SaveSpy().install(runtime)


def hub_events(batch: list[Event]) -> list[func.EventHubEvent]:
    return [
        func.EventHubEvent(body=event.body, sequence_number=n, partition_key="p")
        for n, event in enumerate(batch)
    ]


@fuzz(80)
@given(batch=batches)
def test_a_batch_keeps_the_valid_events_and_dead_letters_each_bad_one(
    runtime: Runtime,
    dead_letters: DeadLetterSpy,
    saves: SaveSpy,
    tally: Counter[str],
    batch: list[Event],
) -> None:
    nonce = uuid.uuid4().hex[:12]
    batch = [event.fresh(nonce) for event in batch]
    for event in batch:
        tally[event.kind] += 1
    store = runtime.ports.store
    before = {model: store.load(model)[0] for model in MODELS}
    ledger = runtime.ports.ledger
    pending_before = {model: ledger.pending(model).items for model in MODELS}
    dead_before, saves_before = len(dead_letters.calls), len(saves.saves)

    with installed(runtime):
        data_events(hub_events(batch))  # must not raise

    # Each invalid event: one dead-letter record, with a reason (a blob under no prefix: none).
    new_dead = dead_letters.calls[dead_before:]
    assert len(new_dead) == sum(event.dead_lettered for event in batch), new_dead
    assert all(source == "eventhub" and reason.strip() for source, reason in new_dead)

    expected: dict[str, set[str]] = {model: set() for model in MODELS}
    for event in batch:
        for model, key in event.items:
            expected[model].add(key)
    for model in MODELS:
        after = store.load(model)[0]
        writes = [saved for key, saved in saves.saves[saves_before:] if key == model]
        if not expected[model]:
            assert after.version == before[model].version, f"{model} written without its data"
            continue
        # Every valid event's data is kept: each new key one more item pending in the model's
        # data ledger (the keys are fresh, and the window is an hour away from closing).
        assert ledger.pending(model).items - pending_before[model] == len(expected[model])
        # At most one transition per model per batch, never one per event: at most one write
        # records a new message (the batch's DataLanded, when it changes the aggregate, e.g.
        # opens a window; the data itself is in the ledger); any other write only clears the
        # dispatched outbox and audit.
        seen = set(before[model].seen_messages)
        transitions = 0
        for saved in writes:
            transitions += bool(set(saved.seen_messages) - seen)
            seen |= set(saved.seen_messages)
        assert transitions <= 1, [saved.version for saved in writes]
        assert after.version - before[model].version == len(writes) <= 2
        assert after.outbox == [] and after.pending_audit == []


def test_one_batch_of_many_events_is_one_command_per_model(
    runtime: Runtime, dead_letters: DeadLetterSpy, saves: SaveSpy
) -> None:
    batch = [
        Event("data-ready", encode(data_ready(MODELS[n % 2], f"e{n}", 10)), ((MODELS[n % 2], ""),))
        for n in range(200)
    ] + [Event("bytes", b"garbage")]
    handled: list[str] = []
    real_handle = runtime.handlers.handle

    def handle(envelope):  # type: ignore[no-untyped-def]
        handled.append(envelope.model)
        return real_handle(envelope)

    runtime.handlers.handle = handle  # type: ignore[method-assign]
    with installed(runtime):
        data_events(hub_events(batch))
    assert sorted(handled) == sorted(MODELS)
    assert len(dead_letters.calls) == 1
    for model in MODELS:
        state = runtime.queries.model_status(model)["retrain"]
        assert state["pending"]["count"] == 100
        transitions = {saved.version for key, saved in saves.saves if key == model}
        assert len(transitions) <= 2  # the transition, then the outbox flush


# --------------------------------------------------------------------------- failing batches
#
# Fault: handling keeps failing for some events (a bug an event triggers, a state write that
# never succeeds for it) or for a while (an outage). Through the real trigger on Azurite state:
# the failing events are dead-lettered with the error, every other event is in its model's
# state, and the trigger returns (so the checkpoint moves only when nothing is left behind).


class FailingHandlers:
    """Wraps `runtime.handlers.handle`: a DataLanded holding a poison key raises (as a bug would,
    every time); the first `outage` calls raise as an unreachable store would."""

    def __init__(self, runtime: Runtime, poison: set[str], outage: int = 0) -> None:
        self.real = runtime.handlers.handle
        self.poison = poison
        self.outage = outage
        self.calls = 0
        self.handled: set[str] = set()  # keys of DataLanded commands the real handler took
        runtime.handlers.handle = self  # type: ignore[method-assign]

    def __call__(self, envelope):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.outage:
            self.outage -= 1
            raise ConnectionError("state store unreachable")
        keys = {item["key"] for item in envelope.payload["items"]}
        if keys & self.poison:
            raise RuntimeError(f"cannot handle {sorted(keys & self.poison)[0]}")
        outcome = self.real(envelope)
        self.handled |= keys
        return outcome


def ready_events(count: int, nonce: str) -> list[Event]:
    events = []
    for n in range(count):
        model = MODELS[n % 2]
        name = f"e{n}-{nonce}"
        events.append(
            Event("data-ready", encode(data_ready(model, name, 1)), ((model, f"event:{name}"),))
        )
    return events


def test_failing_event_hubs_batch_dead_letters_each_failing_event_and_keeps_the_rest(
    runtime: Runtime, dead_letters: DeadLetterSpy
) -> None:
    nonce = uuid.uuid4().hex[:12]
    batch = ready_events(40, nonce)
    poison = {f"event:e7-{nonce}", f"event:e22-{nonce}", f"event:e23-{nonce}"}
    # One transient failure first (the whole batch's first try): retried, not dead-lettered.
    failing = FailingHandlers(runtime, poison, outage=1)

    with installed(runtime):
        data_events(hub_events(batch))  # must not raise: the checkpoint may move

    records = dead_letters.stored(runtime)
    assert sorted(json.loads(r["body"])["event_id"] for r in records) == sorted(
        key.removeprefix("event:") for key in poison
    )
    for record in records:
        assert record["source"] == "eventhub"
        assert record["reason"].startswith("RuntimeError: cannot handle event:")
        assert record["properties"]["model"] in MODELS
    # Every other event reached the real handler (which keeps its data) in a batch that held
    # no poison, after the outage and the splitting.
    assert failing.handled == {key for event in batch for _, key in event.items} - poison
    record_figures(
        "tests/faults/test_event_hub_batches.py::failing_batch",
        {"events": len(batch), "poison": len(poison), "handler_calls": failing.calls,
         "dead_lettered": len(records)},
    )  # fmt: skip


def test_a_dead_letter_that_cannot_be_written_makes_the_batch_wait(
    runtime: Runtime, dead_letters: DeadLetterSpy
) -> None:
    nonce = uuid.uuid4().hex[:12]
    batch = ready_events(4, nonce)
    FailingHandlers(runtime, {f"event:e1-{nonce}"})

    def unavailable(*args: object, **kwargs: object) -> str:
        raise ConnectionError("dead-letter container unreachable")

    dead_letters.inner.record = unavailable
    with installed(runtime), pytest.raises(ConnectionError):
        data_events(hub_events(batch))  # raises: the host retries, the checkpoint stays


def test_a_one_megabyte_garbage_event_is_dead_lettered_whole(
    runtime: Runtime, dead_letters: DeadLetterSpy
) -> None:
    # The largest event Event Hubs takes, one long word: its record is redacted (no SAS kept)
    # without the quadratic scan that used to hold the trigger for minutes, and kept whole.
    body = b"x" * 1_048_576
    with installed(runtime):
        data_events(hub_events([Event("bytes", body)]))
    [record] = dead_letters.stored(runtime)
    assert record["body"] == body.decode() and "body_truncated" not in record
