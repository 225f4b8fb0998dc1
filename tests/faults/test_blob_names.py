"""Blob trigger names through the real `data_blob_landed` with real `func.InputStream`s: a
name that is not <container>/<path> is one dead-letter record, a blob outside every model's
data prefix is ignored (nothing written), one inside is kept; never an exception."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import azure.functions as func
import pytest
from azure.functions.blob import InputStream
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.bootstrap import Runtime
from tests.faults.support import (
    DeadLetterSpy,
    TrainingBackend,
    fuzz,
    installed,
    spy_dead_letters,
    user_function,
)
from tests.service.conftest import policy_yaml
from triggers import data

pytestmark = pytest.mark.azurite

data_blob_landed = user_function(data.data_blob_landed)
CONTAINER = "training-data"

segments = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=20)


@st.composite
def blobs(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(["not-container/path", "outside-prefixes", "kept"]))
    if kind == "not-container/path":
        name = draw(st.sampled_from(["", "/", "no-slash", "/leading", "trailing/"]) | segments)
    elif kind == "outside-prefixes":
        name = draw(
            st.sampled_from([f"other/churn/{uuid.uuid4().hex}", f"{CONTAINER}/elsewhere/x"])
        )
    else:
        name = f"{CONTAINER}/churn/{draw(segments)}/{uuid.uuid4().hex}"
    return kind, name


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    made = make_runtime({"churn": policy_yaml("churn", retrain="{debounce: 1h}")})
    made.__dict__["training"] = TrainingBackend()
    return made


@pytest.fixture
def dead_letters(runtime: Runtime) -> DeadLetterSpy:
    return spy_dead_letters(runtime)


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
    stream = InputStream(
        data=b"a,b\n1,2\n",
        name=name,
        uri=f"https://acct.blob.core.windows.net/{name}",
        length=length,
        blob_properties={"ETag": etag} if etag is not None else None,
    )
    assert isinstance(stream, func.InputStream)
    with installed(runtime):
        data_blob_landed(stream)
    after = store.load("churn")[0]
    assert len(dead_letters.calls) - dead == (kind == "not-container/path")
    if kind == "kept":
        assert any(key.startswith(f"blob:{name}@") for key in after.retrain.seen_keys)
    else:
        assert after.version == version
