"""domain.naming.deployment_name: valid Azure names, deterministic, distinct per input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.naming import deployment_name, is_valid_deployment_name

# The Azure rule, written out again here rather than imported, so a wrong pattern in
# naming.py cannot make these tests agree with it.
AZURE = re.compile(r"[A-Za-z][A-Za-z0-9-]{2,31}")

# The model names the messages and policies accept (orchestrator.messages / policy).
model_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
versions = st.one_of(st.integers(min_value=0, max_value=10**12).map(str), st.text(max_size=40))
# Look-alikes: a tiny alphabet, so different inputs often slug to the same text (the case
# the digest exists for) rather than almost never, as with independent random names.
look_alike_models = st.from_regex(r"\A[aA1][aA1_.-]{0,5}\Z")
look_alike_versions = st.from_regex(r"\A[1a.-]{0,3}\Z")


def test_names_that_are_already_valid_stay_as_they_are() -> None:
    # The demo, the policies and the tests rely on these exact names.
    assert deployment_name("churn", "12") == "churn-v12"
    assert deployment_name("breast-cancer", "2") == "breast-cancer-v2"
    assert deployment_name("bc-classifier", 3) == "bc-classifier-v3"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "model",
    [
        "churn",
        "x" * 100,  # long
        "customer-lifetime-value-regression-model",  # long, already a slug
        "1churn",  # digit first
        "9",
        "Churn_Model",
        "churn.model.v2",
        "a",  # short: the result must still be 3 characters or more
        "__",  # nothing left after slugging
        "Ünïcode-名前",
    ],
)
@pytest.mark.parametrize("version", ["1", "12345678901234567890", "1.0", "", "rc-1"])
def test_odd_names_give_valid_azure_names(model: str, version: str) -> None:
    name = deployment_name(model, version)
    assert AZURE.fullmatch(name), name
    assert is_valid_deployment_name(name)
    assert name == deployment_name(model, version)  # deterministic


def test_a_long_name_is_shortened_and_keeps_its_version() -> None:
    name = deployment_name("x" * 100, "3")
    assert len(name) == 32 and name.endswith("-v3") and name.startswith("x" * 10)


def test_names_changed_by_slugging_do_not_collide() -> None:
    names = {
        deployment_name(model, "1")
        for model in ("churn-model", "Churn_Model", "churn.model", "CHURN-MODEL", "churn_model")
    }
    assert len(names) == 5
    assert "churn-model-v1" in names  # the valid one keeps its plain name


def test_versions_changed_by_slugging_do_not_collide() -> None:
    assert len({deployment_name("churn", v) for v in ("1.0", "1-0", "1_0", "1 0")}) == 4


def test_a_digest_is_stable_across_runs() -> None:
    # sha256 of the model name, not Python's per-process hash(): the same deployment in every
    # process, so a re-dispatched effect after a restart targets what the first one created.
    assert deployment_name("Churn_Model", "1") == "churn-model-431ffb-v1"


@given(model=model_names, version=versions)
def test_every_name_is_a_valid_azure_name(model: str, version: str) -> None:
    assert AZURE.fullmatch(deployment_name(model, version))


@given(
    first=st.tuples(look_alike_models, look_alike_versions),
    second=st.tuples(look_alike_models, look_alike_versions),
)
def test_distinct_models_and_versions_give_distinct_names(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    if first != second:
        assert deployment_name(*first) != deployment_name(*second)
    else:
        assert deployment_name(*first) == deployment_name(*second)


@given(model=model_names, versions=st.lists(versions, min_size=2, max_size=5, unique=True))
def test_one_model_gets_one_name_per_version(model: str, versions: list[str]) -> None:
    assert len({deployment_name(model, v) for v in versions}) == len(versions)
