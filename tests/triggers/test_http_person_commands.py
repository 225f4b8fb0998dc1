"""A person's commands over HTTP (approve or reject, pause, resume, promote now, rollback with a
token), on in-memory fakes: the caller is who the bearer token says, verified exactly as a
command sent on the queue (orchestrator/people.py), and the audit names that person. No token:
401; a refused token: 403, audited, nothing moves; a bad body: 400 naming the field; a command
the promotion cannot take now: 409; a body not declared JSON: 415. A rollback with the function
key alone: 401, unless HTTP_KEY_ROLLBACK lets automation do it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from orchestrator.bootstrap import set_runtime
from orchestrator.messages import InvalidMessage
from tests.fakes import FakeWorld, fake_runtime, start_promotion
from tests.harness import issuer_of
from tests.orchestrator.test_handlers import LEAD, canary_policy
from triggers import http_api

OPERATOR = "oncall@contoso.com"


def user(builder: Any) -> Any:
    return builder._function.get_user_function()


@pytest.fixture
def world():
    w = fake_runtime(canary_policy())
    w.seed_champion("churn", "1")
    w.handle(start_promotion("churn", "2"))
    set_runtime(w.runtime)
    yield w
    set_runtime(None)


def active(w: FakeWorld) -> Any:
    return w.aggregate("churn").promotion.active


def post(
    route: Any, promotion_id: str, body: Any, token: str | None = None, scheme: str = "Bearer"
) -> func.HttpResponse:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"{scheme} {token}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = func.HttpRequest(
        "POST",
        f"http://localhost/api/promotions/{promotion_id}/x",
        headers=headers,
        params={},
        route_params={"promotion_id": promotion_id},
        body=raw,
    )
    return user(route)(request)


def detail(response: func.HttpResponse) -> str:
    return str(json.loads(response.get_body())["detail"])


def approval_body(w: FakeWorld, **changes: Any) -> dict[str, Any]:
    promotion = active(w)
    return {
        "decision": "approve",
        "step": promotion.step,
        "candidate_version": promotion.candidate_version,
        "comment": "looks fine",
    } | changes


def token_for(w: FakeWorld, upn: str, **mint: Any) -> str:
    return issuer_of(w.runtime).mint(upn, **mint)


def test_an_approval_needs_an_approver_s_valid_token_and_the_audit_names_the_token_s_person(world):
    w = world
    promotion_id = active(w).id

    missing = post(http_api.approval, promotion_id, approval_body(w))
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    basic = post(http_api.approval, promotion_id, approval_body(w), "dXNlcjpwdw==", "Basic")
    assert basic.status_code == 401

    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    refused = {
        "a non-approver's": (token_for(w, "intern@contoso.com"), "not among churn's approvers"),
        "an expired one": (token_for(w, LEAD, now=two_hours_ago), "expired token"),
        "another audience's": (
            token_for(w, LEAD, audience="api://another-api"),
            "wrong audience",
        ),
        "not a token": ("not-a-jwt", "malformed token"),
    }
    for case, (token, reason) in refused.items():
        response = post(http_api.approval, promotion_id, approval_body(w), token)
        assert response.status_code == 403, case
        assert reason in detail(response), case
        assert active(w).status == "awaiting_approval", case
        assert w.audit.actions("churn")[-1] == "message.rejected", case

    response = post(http_api.approval, promotion_id, approval_body(w), token_for(w, LEAD))
    assert response.status_code == 202
    assert json.loads(response.get_body())["status"] == "applied"
    assert active(w).status == "deploying"
    approved = active(w).approval
    assert (approved.approver, approved.comment) == (LEAD, "looks fine")
    [record] = [r for r in w.audit.read("churn") if r.action == "promotion.deploying"]
    assert record.actor == LEAD
    assert record.detail["identity"]["upn"] == LEAD
    assert record.detail["identity"]["authorized_by"] == "approvers"

    # Nothing awaits approval any more: the same answer again changes nothing.
    again = post(
        http_api.approval, promotion_id, approval_body(w, step="approval"), token_for(w, LEAD)
    )
    assert again.status_code == 409
    assert active(w).status == "deploying"


def test_an_answer_for_another_step_or_version_moves_nothing(world):
    w = world
    promotion_id = active(w).id
    token = token_for(w, LEAD)
    for changes in ({"candidate_version": "7"}, {"step": "canary-1"}):
        response = post(http_api.approval, promotion_id, approval_body(w, **changes), token)
        assert response.status_code == 409, changes
        assert active(w).status == "awaiting_approval"

    reject = approval_body(w, decision="reject", comment="auc is not enough")
    assert post(http_api.approval, promotion_id, reject, token).status_code == 202
    assert active(w) is None
    assert w.aggregate("churn").promotion.history[-1].outcome == "rejected"


APPROVAL = {"decision": "approve", "step": "approval", "candidate_version": "2"}


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (http_api.approval, APPROVAL | {"decision": "yes"}, "decision"),
        (http_api.approval, {"decision": "approve", "candidate_version": "2"}, "step"),
        (http_api.approval, APPROVAL | {"candidate_version": 2}, "candidate_version"),
        (http_api.approval, APPROVAL | {"approver": "mallory@contoso.com"}, "approver"),
        (http_api.promote_now, {}, "reason"),
        (http_api.promote_now, {"reason": ""}, "reason"),
        (http_api.pause, {"reason": 5}, "reason"),
        (http_api.resume, b"[]", "body"),
        (http_api.pause, b"{not json", "body"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(world, route, body, field):
    w = world
    before = w.aggregate("churn").model_dump()
    response = post(route, active(w).id, body, token_for(w, LEAD))
    assert response.status_code == 400
    assert detail(response).startswith(field)
    assert w.aggregate("churn").model_dump() == before


def test_an_unknown_promotion_is_a_404(world):
    w = world
    for route, body in ((http_api.pause, {}), (http_api.promote_now, {"reason": "r"})):
        assert (
            post(
                route, "nope", body, token_for(w, OPERATOR, roles=["Promotion.Operate"])
            ).status_code
            == 404
        )


def to_canary(w: FakeWorld) -> str:
    promotion_id = active(w).id
    assert (
        post(http_api.approval, promotion_id, approval_body(w), token_for(w, LEAD)).status_code
        == 202
    )
    w.run(until=lambda: active(w) is not None and active(w).status == "canary")
    return promotion_id


def test_pause_resume_and_promote_now_need_the_operator_role_and_are_recorded_as_the_person(
    world,
):
    w = world
    promotion_id = to_canary(w)
    operator = token_for(w, OPERATOR, roles=["Promotion.Operate"])
    outsider = token_for(w, "intern@contoso.com")

    assert post(http_api.pause, promotion_id, {"reason": "x"}, outsider).status_code == 403
    assert not active(w).paused

    assert (
        post(http_api.pause, promotion_id, {"reason": "a look at the logs"}, operator).status_code
        == 202
    )
    assert (active(w).paused, active(w).paused_by) == (True, OPERATOR)
    assert post(http_api.pause, promotion_id, {}, operator).status_code == 409  # already paused
    blocked = post(http_api.promote_now, promotion_id, {"reason": "ship it"}, operator)
    assert blocked.status_code == 409 and "paused" in detail(blocked)

    assert post(http_api.resume, promotion_id, {}, operator).status_code == 202
    assert not active(w).paused
    assert (
        post(http_api.promote_now, promotion_id, {"reason": "ship it"}, operator).status_code == 202
    )
    assert active(w).status == "production_bake"
    actors = {
        r.action: r.actor
        for r in w.audit.read("churn")
        if r.action in ("promotion.paused", "promotion.resumed", "promotion.promote_now")
    }
    assert actors == {
        "promotion.paused": OPERATOR,
        "promotion.resumed": OPERATOR,
        "promotion.promote_now": OPERATOR,
    }


def test_a_rollback_with_a_token_is_verified_and_audited_as_the_person(world):
    w = world
    promotion_id = to_canary(w)
    assert w.endpoint.live == {"churn-v1": 90, "churn-v2": 10}

    refused = post(
        http_api.rollback, promotion_id, {"reason": "r"}, token_for(w, "intern@contoso.com")
    )
    assert refused.status_code == 403
    assert active(w).status == "canary"

    operator = token_for(w, OPERATOR, roles=["Promotion.Operate"])
    response = post(http_api.rollback, promotion_id, {"reason": "error rate"}, operator)
    assert response.status_code == 202
    assert active(w) is None
    assert w.endpoint.live == {"churn-v1": 100}
    [record] = [r for r in w.audit.read("churn") if r.to_state == "rolled_back"]
    assert record.actor == OPERATOR
    assert record.detail["identity"]["authorized_by"] == "role:Promotion.Operate"


def test_a_rollback_with_the_function_key_alone_is_refused_unless_automation_may(world):
    """The key names nobody (the dashboard hands it to every viewer): 401, nothing moves;
    with HTTP_KEY_ROLLBACK=true (an automation's opt-in) it is applied as `function-key`."""
    w = world
    promotion_id = to_canary(w)
    refused = post(http_api.rollback, promotion_id, {"reason": "error rate"})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "HTTP_KEY_ROLLBACK" in detail(refused)
    assert active(w).status == "canary"

    w.runtime.settings = w.runtime.settings.model_copy(update={"http_key_rollback": True})
    response = post(http_api.rollback, promotion_id, {"reason": "error rate"})
    assert response.status_code == 202
    assert active(w) is None
    [record] = [r for r in w.audit.read("churn") if r.to_state == "rolled_back"]
    assert record.actor == "function-key"


def test_a_rollback_by_the_app_service_principal_needs_no_token_but_its_role(world):
    w = world
    promotion_id = to_canary(w)
    w.runtime.settings = w.runtime.settings.model_copy(update={"website_auth_enabled": "True"})

    def request(*roles: str) -> func.HttpRequest:
        principal = {
            "auth_typ": "aad",
            "claims": [
                {"typ": "preferred_username", "val": OPERATOR},
                {
                    "typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
                    "val": "o-1",
                },
                *({"typ": "roles", "val": role} for role in roles),
            ],
        }
        encoded = base64.b64encode(json.dumps(principal).encode()).decode()
        return func.HttpRequest(
            "POST",
            f"http://localhost/api/promotions/{promotion_id}/rollback",
            headers={"content-type": "application/json", "x-ms-client-principal": encoded},
            params={},
            route_params={"promotion_id": promotion_id},
            body=json.dumps({"reason": "error rate"}).encode(),
        )

    # Signed in, but without the operator's app role: refused, nothing moves.
    refused = user(http_api.rollback)(request("Promotion.Approve"))
    assert refused.status_code == 403 and "Promotion.Operate" in detail(refused)
    assert active(w).status == "canary"
    assert user(http_api.rollback)(request("Promotion.Operate")).status_code == 202
    [record] = [r for r in w.audit.read("churn") if r.to_state == "rolled_back"]
    assert record.actor == OPERATOR


def test_a_refused_sender_is_a_403_and_a_command_refused_for_itself_a_400(world, monkeypatch):
    w = world
    promotion_id = active(w).id
    sender = post(http_api.approval, promotion_id, approval_body(w), token_for(w, "x@contoso.com"))
    assert (sender.status_code, json.loads(sender.get_body())["title"]) == (403, "Refused")

    def refuse_the_command(envelope: Any, **options: Any) -> Any:
        raise InvalidMessage("comment: not what this policy takes")

    monkeypatch.setattr(w.runtime.handlers, "handle", refuse_the_command)
    response = post(http_api.approval, promotion_id, approval_body(w), token_for(w, LEAD))
    assert response.status_code == 400
    assert detail(response) == "comment: not what this policy takes"


def test_a_refusal_quotes_a_token_s_claims_short_and_printable(world):
    """The claims of a refused token are the sender's text: the answer, the audit and the log
    get at most ~100 printable characters of each."""
    w = world
    promotion_id = active(w).id
    audience = "api://x\u202e\x1b[31m<script>" + "A" * 20_000
    token = token_for(w, LEAD, audience=audience)
    response = post(http_api.approval, promotion_id, approval_body(w), token)
    assert response.status_code == 403
    reason = detail(response)
    assert "wrong audience" in reason and len(reason) < 400
    assert reason.isprintable() and "\u202e" not in reason and "\x1b" not in reason
    [rejected] = [r for r in w.audit.read("churn") if r.action == "message.rejected"]
    assert rejected.detail["reason"] == reason


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_command_not_declared_json_is_a_415_and_moves_nothing(world, content_type):
    w = world
    promotion_id = active(w).id
    headers = {"authorization": f"Bearer {token_for(w, LEAD)}"}
    if content_type:
        headers["content-type"] = content_type
    for route, body in (
        (http_api.approval, approval_body(w)),
        (http_api.rollback, {"reason": "r"}),
    ):
        request = func.HttpRequest(
            "POST",
            "http://localhost/api/x",
            headers=headers,
            params={},
            route_params={"promotion_id": promotion_id},
            body=json.dumps(body).encode(),
        )
        response = user(route)(request)
        assert response.status_code == 415
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert active(w).status == "awaiting_approval"
