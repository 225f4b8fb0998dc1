"""Bad HTTP bodies against POST /api/retrain and POST /api/promotions/{id}/rollback.

Real `func.HttpRequest` objects into the real functions, on a runtime wired as in production
(Azurite state). Never a 500 or an exception: 400 problem+json naming the field or the body,
404 for an unknown model or promotion, 202 for a valid request, 415 for a rollback whose body
is not declared JSON (the rollback is sent with an operator's token); a rejected request writes
nothing (no aggregate is created, no aggregate version moves).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.bootstrap import Runtime
from orchestrator.messages import Envelope
from promotion.commands import StartPromotion
from tests.faults.support import (
    PATHOLOGICAL_JSON,
    FixedMetrics,
    RecordingEndpoint,
    RecordingRegistry,
    TrainingBackend,
    fuzz,
    http_request,
    installed,
    user_function,
)
from tests.harness import issuer_of, policy_yaml
from triggers import http_api

pytestmark = pytest.mark.azurite

retrain = user_function(http_api.retrain)
rollback = user_function(http_api.rollback)

MODELS = ("churn", "fraud", "churn.v2")  # a dot is legal in a model name
RETRAIN_FIELDS = ("model", "data_uri", "reason", "force")
# The data account the runtime takes data from: a valid data_uri is a blob of it under the
# model's prefix (training-data/<model>/); any other text is refused (domain/data_location.py).
DATA_ACCOUNT = "https://acct.blob.core.windows.net"
ROLLBACK_FIELDS = ("reason",)
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Case:
    kind: str  # for the counts in docs/reliability-notes.md
    body: bytes
    statuses: frozenset[int]
    names: tuple[str, ...] = ()  # the problem's detail must name one of these


def encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


# --------------------------------------------------------------------------- strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
non_objects = st.recursive(
    json_scalars, lambda inner: st.lists(inner | json_values, max_size=4), max_leaves=8
)
not_a_string = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
)
not_a_bool = st.one_of(
    st.none(),
    st.integers(min_value=2),
    st.floats(min_value=0.1, max_value=0.9),
    st.text(alphabet=string.ascii_letters, min_size=6, max_size=12),  # "maybe", not "true"
    st.lists(json_scalars, min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
)
WRONG_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "model": not_a_string,
    "data_uri": not_a_string.filter(lambda value: value is not None),  # null is allowed
    "reason": not_a_string,
    "force": not_a_bool,
}
unicode_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=60
)


def valid_retrain_document() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"model": st.sampled_from(MODELS)},
        optional={
            "data_uri": st.text(min_size=1, max_size=200),
            "reason": st.text(max_size=500),
            "force": st.booleans(),
        },
    )


@st.composite
def retrain_cases(draw: st.DrawFn) -> Case:
    kind = draw(
        st.sampled_from(
            [
                "bytes",
                "pathological-json",
                "non-object",
                "wrong-type",
                "missing-field",
                "extra-field",
                "huge-string",
                "unicode-unknown-model",
                "refused-data-uri",
                "valid",
            ]
        )
    )
    bad = frozenset({400})
    any_field = (*RETRAIN_FIELDS, "body")
    if kind == "bytes":
        return Case(kind, draw(st.binary(max_size=300)), bad, any_field)
    if kind == "pathological-json":
        return Case(kind, draw(st.sampled_from(PATHOLOGICAL_JSON)), bad, any_field)
    if kind == "non-object":
        return Case(kind, encode(draw(non_objects)), bad, ("body",))
    document = draw(valid_retrain_document())
    if kind == "wrong-type":
        name = draw(st.sampled_from(RETRAIN_FIELDS))
        document[name] = draw(WRONG_TYPES[name])
        return Case(kind, encode(document), bad, (name,))
    if kind == "missing-field":
        del document["model"]
        return Case(kind, encode(document), bad, ("model",))
    if kind == "extra-field":
        extra = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in RETRAIN_FIELDS))
        document[extra] = draw(json_values)
        return Case(kind, encode(document), bad, (extra,))
    if kind == "huge-string":
        name, low = draw(st.sampled_from([("model", 101), ("reason", 501), ("data_uri", 2001)]))
        size = draw(st.sampled_from([low, low * 10, 1_000_000]))
        document[name] = draw(st.sampled_from(["x", "é", "😀", "\u202e"])) * size
        return Case(kind, encode(document), bad, (name,))
    if kind == "unicode-unknown-model":
        document["model"] = draw(unicode_text.filter(lambda m: m not in MODELS))
        return Case(kind, encode(document), frozenset({404}), ("model",))
    if kind == "refused-data-uri":
        document["data_uri"] = draw(st.text(min_size=1, max_size=200))
        return Case(kind, encode(document), bad, ("data_uri",))
    if "data_uri" in document:
        blob = draw(st.text(alphabet=string.ascii_lowercase + string.digits + "-_", min_size=1))
        document["data_uri"] = f"{DATA_ACCOUNT}/training-data/{document['model']}/{blob}.csv"
    return Case(kind, encode(document), frozenset({202}))


@st.composite
def rollback_cases(draw: st.DrawFn) -> Case:
    kind = draw(
        st.sampled_from(
            ["bytes", "pathological-json", "non-object", "wrong-type", "missing-field",
             "extra-field", "huge-string", "valid"]
        )
    )  # fmt: skip
    bad = frozenset({400})
    if kind == "bytes":
        return Case(kind, draw(st.binary(max_size=300)), bad, ("reason", "body"))
    if kind == "pathological-json":
        return Case(kind, draw(st.sampled_from(PATHOLOGICAL_JSON)), bad, ("reason", "body", "a"))
    if kind == "non-object":
        return Case(kind, encode(draw(non_objects)), bad, ("body",))
    if kind == "wrong-type":
        return Case(kind, encode({"reason": draw(not_a_string)}), bad, ("reason",))
    if kind == "missing-field":
        return Case(kind, b"{}", bad, ("reason",))
    if kind == "extra-field":
        extra = draw(st.text(min_size=1, max_size=20).filter(lambda k: k != "reason"))
        return Case(kind, encode({"reason": "r", extra: draw(json_values)}), bad, (extra,))
    if kind == "huge-string":
        size = draw(st.sampled_from([501, 5_000, 1_000_000]))
        return Case(kind, encode({"reason": "ü" * size}), bad, ("reason",))
    reason = draw(unicode_text | st.text(min_size=1, max_size=500))
    # A known promotion answers 202 (or 409 once it is no longer active); see the test.
    return Case(kind, encode({"reason": reason}), frozenset({202, 409}))


headers = st.fixed_dictionaries(
    {},
    optional={
        "x-requested-by": st.text(max_size=300),
        "idempotency-key": st.text(max_size=100),
        "content-type": st.sampled_from(["application/json", "text/plain", "", "application/xml"]),
    },
)


# --------------------------------------------------------------------------- checks


def versions(runtime: Runtime) -> dict[str, int]:
    store = runtime.ports.store
    return {key: store.load(key)[0].version for key in store.list_keys()}


def check_problem(response: func.HttpResponse, case: Case) -> dict[str, Any]:
    assert response.mimetype == PROBLEM, response.get_body()
    document = json.loads(response.get_body())
    assert document["status"] == response.status_code
    detail = document["detail"]
    assert isinstance(detail, str) and detail
    if case.names:
        # pydantic names the location first: "<field>: <message>"; the parser says "body: ...".
        assert any(name in detail for name in case.names), (detail, case.names)
    return document


def call(function: Callable[..., Any], request: func.HttpRequest) -> func.HttpResponse:
    response = function(request)
    assert isinstance(response, func.HttpResponse)
    assert response.status_code != 500
    return response


# --------------------------------------------------------------------------- tests


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    """Our own ports faked where a request could reach them: no MLflow data, no endpoint."""
    policies = {model: policy_yaml(model) for model in MODELS}
    # An endpoint name cannot hold a dot.
    policies["churn.v2"] = policies["churn.v2"].replace("churn.v2-ep", "churn-v2-ep")
    endpoint = RecordingEndpoint()
    return make_runtime(
        policies,
        training=TrainingBackend(),
        metrics=FixedMetrics({"auc": 0.95}),
        registry=RecordingRegistry(),
        endpoints=lambda policy: endpoint,
        DataStorage__blobServiceUri=DATA_ACCOUNT,
    )


@fuzz(150)
@given(case=retrain_cases(), request_headers=headers)
def test_retrain_answers_every_body_with_400_404_or_202(
    runtime: Runtime, tally: Counter[str], case: Case, request_headers: dict[str, str]
) -> None:
    tally[case.kind] += 1
    before = versions(runtime)
    with installed(runtime):
        response = call(
            retrain, http_request("POST", "/api/retrain", case.body, headers=request_headers)
        )
    assert response.status_code in case.statuses, (case, response.get_body()[:500])
    after = versions(runtime)
    if response.status_code == 202:
        document = json.loads(response.get_body())
        assert response.headers["Location"] == document["status_url"]
        assert after[document["model"]] >= before.get(document["model"], 0)
        return
    check_problem(response, case)
    assert after == before, "a rejected request wrote state"


@pytest.fixture
def promotion_id(runtime: Runtime) -> str:
    """An active promotion of churn (staging passed, deploying), built through the handler."""
    start = Envelope.new("StartPromotion", "churn", StartPromotion(candidate_version="7"))
    outcome = runtime.handlers.handle(runtime.signer.sign(start))
    assert outcome.status == "applied"
    active = runtime.queries.model_status("churn")["active_promotion"]
    assert active is not None
    return str(active["id"])


@fuzz(120)
@given(
    case=rollback_cases(),
    known=st.booleans(),
    unknown_id=st.text(max_size=80),
    request_headers=headers,
)
def test_rollback_answers_every_body_with_400_404_or_409_or_202(
    runtime: Runtime,
    promotion_id: str,
    tally: Counter[str],
    case: Case,
    known: bool,
    unknown_id: str,
    request_headers: dict[str, str],
) -> None:
    if not known and unknown_id == promotion_id:
        unknown_id += "x"
    route = promotion_id if known else unknown_id
    tally[case.kind + ("" if known else " (unknown promotion)")] += 1
    before = versions(runtime)
    promotion_before = runtime.queries.find_promotion(promotion_id)
    # From a person allowed to roll back (a rollback needs a verified caller).
    token = issuer_of(runtime).mint("ops@contoso.com", roles=["Promotion.Operate"])
    with installed(runtime):
        response = call(
            rollback,
            http_request(
                "POST",
                f"/api/promotions/{route}/rollback",
                case.body,
                route_params={"promotion_id": route},
                headers=request_headers | {"authorization": f"Bearer {token}"},
            ),
        )
    expected = case.statuses if known or case.statuses == {400} else frozenset({404})
    if request_headers.get("content-type") != "application/json":
        expected = frozenset({415})  # a body not declared JSON is not read at all
    assert response.status_code in expected, (case, response.get_body()[:500])
    if response.status_code == 202:
        assert json.loads(response.get_body())["promotion_id"] == promotion_id
        return
    check_problem(response, case if response.status_code != 415 else Case("415", b"", expected))
    if response.status_code in (400, 404):
        assert versions(runtime) == before, "a rejected request wrote state"
    # 409: the promotion was already rolled back; the audit notes the refusal, nothing moves.
    assert runtime.queries.find_promotion(promotion_id) == promotion_before


def test_a_dotted_model_name_can_be_retrained(runtime: Runtime) -> None:
    """Regression: the manual run id was the raw model name, and a dot made it invalid
    (pydantic ValidationError -> 500). It is now slugged like the automatic run ids."""
    with installed(runtime):
        response = call(
            retrain,
            http_request(
                "POST",
                "/api/retrain",
                json.dumps(
                    {
                        "model": "churn.v2",
                        "data_uri": f"{DATA_ACCOUNT}/training-data/churn.v2/d.csv",
                        "force": True,
                    }
                ).encode(),
            ),
        )
    assert response.status_code == 202, response.get_body()
    run_id = json.loads(response.get_body())["run_id"]
    assert run_id.startswith("churn-v2-manual-")
    assert [request.run_id for request in runtime.training.submissions] == [run_id]
