"""Blob names through the real `data_blob_created` with real `func.EventGridEvent`s (the
BlobCreated schema, built as devhost's subscription builds them): an event whose subject names
no blob is one dead-letter record, a blob outside every model's data prefix is ignored
(nothing written), one inside is kept; never an exception. A blob whose URI the data policy
refuses (another account; a '.' or '..' segment, a control character or a backslash in its
name) is one dead-letter record too."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from urllib.parse import quote, unquote

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.azurite import Azurite
from devhost.host.pollers import blob_created_event
from orchestrator.bootstrap import Runtime
from orchestrator.clock import utc_now
from tests.faults.support import (
    DeadLetterSpy,
    TrainingBackend,
    dead_letter_spy,
    fuzz,
    installed,
    user_function,
)
from tests.harness import policy_yaml
from triggers import data
from triggers.payloads import blob_item

pytestmark = pytest.mark.azurite

data_blob_created = user_function(data.data_blob_created)
CONTAINER = "training-data"
ACCOUNT = "https://acct.blob.core.windows.net"  # the data account

segments = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=20)


@st.composite
def blobs(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(["not-a-blob", "outside-prefixes", "refused-uri", "kept"]))
    if kind == "not-a-blob":  # a subject that names no blob: the whole subject is drawn
        name = draw(st.sampled_from(["", "/", "/blobServices/default/containers/x"]) | segments)
    elif kind == "outside-prefixes":
        name = draw(
            st.sampled_from([f"other/churn/{uuid.uuid4().hex}", f"{CONTAINER}/elsewhere/x"])
        )
    else:
        segment = draw(segments)
        name = f"{CONTAINER}/churn/{segment}/{uuid.uuid4().hex}"
        dots = {segment, unquote(segment)} & {".", ".."}  # also a literal '%2e%2e'
        if dots or "\\" in segment or any(ord(c) < 32 or ord(c) == 127 for c in segment):
            kind = "refused-uri"  # a name the data policy refuses in a URI
    return kind, name


@pytest.fixture
def dead_letters(azurite: Azurite) -> DeadLetterSpy:
    return dead_letter_spy(azurite)


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], dead_letters: DeadLetterSpy) -> Runtime:
    return make_runtime(
        {"churn": policy_yaml("churn", retrain="{debounce: 1h}")},
        training=TrainingBackend(),
        dead_letters=dead_letters,
        DataStorage__blobServiceUri=ACCOUNT,
    )


@fuzz(60)
@given(blob=blobs(), etag=st.none() | st.text(max_size=20), length=st.none() | st.integers(0))
def test_a_blob_name_is_dead_lettered_ignored_or_kept(
    runtime: Runtime,
    dead_letters: DeadLetterSpy,
    tally: Counter[str],
    blob: tuple[str, str],
    etag: str | None,
    length: int | None,
) -> None:
    kind, name = blob
    tally[kind] += 1
    store = runtime.ports.store
    version = store.load("churn")[0].version
    dead = len(dead_letters.calls)
    # As Event Grid sends it: the URL percent-encoded; on the data account, but for
    # "refused-uri".
    account = ACCOUNT if kind != "refused-uri" else "https://evil.example"
    container, _, path = name.partition("/")
    event = blob_created_event(f"{account}/{container}", path, etag or "0x1", length)
    if kind == "not-a-blob":
        event = func.EventGridEvent(
            id=event.id,
            data=event.get_json(),
            topic=event.topic,
            subject=name,
            event_type=event.event_type,
            event_time=event.event_time,
            data_version="",
        )
    with installed(runtime):
        data_blob_created(event)
    after = store.load("churn")[0]
    assert len(dead_letters.calls) - dead == (kind in ("not-a-blob", "refused-uri"))
    if kind == "kept":
        # Its key is claimed: the same blob from another message is a duplicate.
        probe = blob_item(name, f"{ACCOUNT}/{quote(name)}", etag or "0x1", None)
        keep = runtime.policies["churn"].retrain.dedup_retention
        assert runtime.ports.ledger.claim("churn", [probe], "probe", utc_now(), keep) == []
    else:
        assert after.version == version
