"""Policy files: random YAML and mutations of a valid policy. `parse_policy` returns a valid
ModelPolicy or raises PolicyError naming the file, the field and the reason; nothing else."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from domain.policy import ModelPolicy, PolicyError, parse_policy
from orchestrator.policy_files import load_policy
from tests.faults.support import fuzz

EXAMPLE = Path(__file__).resolve().parents[1] / "domain" / "example_policy.yml"
SOURCE = "policies/fuzzed.yml"
VALID: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def check(text: str) -> str:
    """Parse; return "valid" or "PolicyError", failing on any other outcome."""
    try:
        policy = parse_policy(text, SOURCE)
    except PolicyError as exc:
        assert exc.path == SOURCE
        assert exc.field and exc.field.strip(), exc
        assert exc.reason and exc.reason.strip(), exc
        assert str(exc).startswith(f"{SOURCE}: {exc.field}: ")
        return "PolicyError"
    assert isinstance(policy, ModelPolicy)
    return "valid"


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        ["10m", "1.5h", "0s", "-5s", "90", "P1D", "soon", "threshold", "champion", ">=", "<="]
    )
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.sampled_from(sorted(VALID)), inner, max_size=5)
    ),
    max_leaves=15,
)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a YAML document (mappings and sequences)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(document, dict):
        children: list[tuple[Any, Any]] = list(document.items())
    elif isinstance(document, list):
        children = list(enumerate(document))
    else:
        return found
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


VALID_PATHS = paths(VALID)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    document = copy.deepcopy(VALID)
    how = draw(st.sampled_from(["replace", "delete", "add", "retype-section"]))
    path = draw(st.sampled_from(VALID_PATHS))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "replace":
        parent[last] = draw(values)
    elif how == "delete":
        del parent[last]
    elif how == "add":
        if isinstance(parent, list):
            parent.append(draw(values))
        else:
            parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
    else:
        section = draw(st.sampled_from(sorted(VALID)))
        document[section] = draw(scalars | st.lists(scalars, max_size=3))
    return how, yaml.safe_dump(document, allow_unicode=True)


@fuzz(150)
@given(case=mutated())
def test_a_mutated_policy_is_valid_or_a_policy_error(
    tally: Counter[str], case: tuple[str, str]
) -> None:
    how, text = case
    tally[f"{how} -> {check(text)}"] += 1


@fuzz(100)
@given(document=st.dictionaries(st.text(max_size=12) | st.sampled_from(sorted(VALID)), values))
def test_a_random_mapping_is_valid_or_a_policy_error(
    tally: Counter[str], document: dict[Any, Any]
) -> None:
    tally[f"mapping -> {check(yaml.safe_dump(document, allow_unicode=True))}"] += 1


yaml_texts = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "",
            "~",
            "[1, 2",
            "a: b: c",
            "? [a, b]\n: 1\n",  # a mapping key YAML cannot hash
            "model: !!python/object/apply:os.system ['true']\n",  # safe_load refuses it
            "&a [*a]",
            "model: &m churn\nendpoint: *m\n",
            "\t- tab indented",
            "model: churn\nmodel: fraud\n",
        ]
    ),
)


@fuzz(100)
@given(text=yaml_texts)
def test_any_text_is_valid_or_a_policy_error(tally: Counter[str], text: str) -> None:
    tally[f"text -> {check(text)}"] += 1


BASE = b"model: churn\nendpoint: churn-endpoint\ndata: {container: churn-data}\n"


# Once bugs: each of these let an exception other than PolicyError escape.
@pytest.mark.parametrize(
    "content",
    [
        # _parse_duration: timedelta(seconds=huge) raises OverflowError, which pydantic does
        # not turn into a validation error.
        pytest.param(BASE + b"production_bake: 99999999999999d\n", id="huge-duration-days"),
        pytest.param(BASE + b"retrain: {debounce: 999999999999999999999999h}\n", id="huge-hours"),
        # load_policy catches OSError only: a file that is not UTF-8 raises UnicodeDecodeError.
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf-8"),
        # yaml.safe_load recurses per nesting level: RecursionError.
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
    ],
)
def test_a_broken_policy_file_is_a_policy_error(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_bytes(content)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert raised.value.field and raised.value.reason
