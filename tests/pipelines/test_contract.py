"""The inputs contract both training backends share (`pipelines.contract`)."""

from __future__ import annotations

from pipelines.contract import data_uris_text


def test_data_uris_text_is_bounded_and_quote_safe() -> None:
    assert data_uris_text(["a", "b'c"]) == "a,b%27c"
    long = data_uris_text([f"https://x/{n:05d}.csv" for n in range(1000)], limit=200)
    assert len(long) <= 200 and long.endswith("more")
