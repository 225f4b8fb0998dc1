"""The inputs contract both training backends share (`pipelines.contract`)."""

from __future__ import annotations

import pytest

from pipelines.contract import column_inputs, data_uris_text


def test_data_uris_text_is_bounded_and_quote_safe() -> None:
    assert data_uris_text(["a", "b'c"]) == "a,b%27c"
    long = data_uris_text([f"https://x/{n:05d}.csv" for n in range(1000)], limit=200)
    assert len(long) <= 200 and long.endswith("more")


def test_column_inputs_fill_what_the_pipeline_declares() -> None:
    both = {"label_column", "feature_columns"}
    assert column_inputs("label", None, both, "p.yml") == {
        "label_column": "label",
        "feature_columns": "*",
    }
    assert column_inputs("y", ["a b", "c"], both, "p.yml") == {
        "label_column": "y",
        "feature_columns": "a b,c",
    }
    # A pipeline without the inputs: the defaults are what it trains on anyway...
    assert column_inputs("label", None, set(), "p.yml") == {}
    # ...and anything else is refused, naming the pipeline and the input.
    with pytest.raises(ValueError, match=r"p\.yml: the pipeline has no input 'label_column'"):
        column_inputs("y", None, {"feature_columns"}, "p.yml")
    with pytest.raises(ValueError, match=r"no input 'feature_columns'.*'a'"):
        column_inputs("label", ["a"], {"label_column"}, "p.yml")
