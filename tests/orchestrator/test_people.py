"""Only the right people move a promotion (orchestrator/people.py), on in-memory fakes.

A person's command is from whom its bearer token says (the fakes' local issuer signs tokens
with the claims Entra ID issues), and only if that principal holds the command's app role or
is one of the model's approvers. Everything else is refused with its reason, audited, and
dead-lettered by the trigger; the audit names the token's identity, never the payload's.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from adapters.local_issuer import LocalIssuer, local_issuer_url
from orchestrator.bootstrap import set_runtime
from orchestrator.messages import Envelope, InvalidMessage
from orchestrator.people import PERSON_COMMANDS, authorize
from orchestrator.ports import IdentityUnavailable, Principal
from promotion.commands import ApprovalDecision, PausePromotion, RollbackRequested
from retrain.commands import RetrainRequested
from tests.fakes import FakeWorld, fake_runtime, message, start_promotion
from tests.harness import issuer_of, policy_yaml, signed
from tests.orchestrator.test_handlers import LEAD, canary_policy
from triggers.messages import handle_message

OTHER_TENANT = "11111111-2222-3333-4444-555555555555"
FORGED_APPROVER = "mallory@contoso.com"  # what a forger writes in the payload


def awaiting_approval(**policy: str) -> FakeWorld:
    w = fake_runtime(canary_policy(**policy))
    w.seed_champion("churn", "1")
    w.handle(start_promotion("churn", "2"))
    assert status(w) == "awaiting_approval"
    return w


def status(w: FakeWorld) -> str:
    active = w.aggregate("churn").promotion.active
    return str(active.status) if active else "none"


def approval(w: FakeWorld, message_id: str, approver: str = FORGED_APPROVER) -> Envelope:
    """An approval of the active promotion whose payload names `approver` (no token yet)."""
    active = w.aggregate("churn").promotion.active
    assert active is not None
    command = ApprovalDecision(
        promotion_id=active.id,
        step="approval",
        candidate_version=active.candidate_version,
        decision="approve",
        approver=approver,
    )
    return message("ApprovalDecision", "churn", command, message_id=message_id)


def with_token(envelope: Envelope, token: str) -> Envelope:
    return envelope.model_copy(update={"auth": token})


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def tampered(token: str) -> str:
    """The token with its payload changed (a role added): the signature no longer matches."""
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["roles"] = ["Promotion.Approve"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def refusals(issuer: LocalIssuer, tmp_path: Any) -> dict[str, tuple[str | None, str]]:
    """Each way an approval's token fails: (the token, the reason the refusal gives)."""
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    stranger = LocalIssuer(tmp_path / "another-issuer")  # its own key pair
    return {
        "no token": (None, "missing token"),
        "expired": (issuer.mint(LEAD, now=two_hours_ago), "expired token"),
        "wrong audience": (issuer.mint(LEAD, audience="api://another-api"), "wrong audience"),
        "wrong issuer": (
            issuer.mint(LEAD, claims={"iss": "https://evil.test/v2.0"}),
            "wrong issuer",
        ),
        "wrong tenant": (
            issuer.mint(LEAD, claims={"tid": OTHER_TENANT, "iss": local_issuer_url(OTHER_TENANT)}),
            "wrong tenant",
        ),
        "bad signature": (tampered(issuer.mint(LEAD)), "bad signature"),
        "unknown key": (stranger.mint(LEAD), "unknown key"),
        "a non-approver's": (issuer.mint("intern@contoso.com"), "not among churn's approvers"),
        "an operator's (another role)": (
            issuer.mint("oncall@contoso.com", roles=["Promotion.Operate"]),
            "holds no app role Promotion.Approve",
        ),
    }


def test_only_a_valid_token_of_an_approver_moves_the_promotion_and_the_audit_names_it(tmp_path):
    w = awaiting_approval()
    issuer = issuer_of(w.runtime)
    for case, (token, reason) in refusals(issuer, tmp_path).items():
        envelope = approval(w, f"m-{case}")
        if token is not None:
            envelope = with_token(envelope, token)
        with pytest.raises(InvalidMessage, match=reason):
            w.handle(envelope)
        # Nothing moved, the refusal is audited with its reason, the id is not remembered.
        assert status(w) == "awaiting_approval", case
        assert w.endpoint.deploy_calls == {}, case
        [record] = [r for r in w.audit.read("churn") if r.cause_id == f"m-{case}"]
        assert (record.action, record.actor) == ("message.rejected", "unverified"), case
        assert reason in record.detail["reason"], case
        assert not w.aggregate("churn").has_seen(f"m-{case}"), case

    # The lead's token moves it, whatever approver the payload names.
    token = issuer.mint(LEAD)
    valid = with_token(approval(w, "m-valid"), token)
    assert w.handle(valid).status == "applied"
    assert status(w) == "deploying"
    records = [r for r in w.audit.read("churn") if r.cause_id == "m-valid"]
    assert records and {r.actor for r in records} == {LEAD}
    claims = claims_of(token)
    identity = {
        "oid": claims["oid"],
        "name": claims["name"],
        "upn": LEAD,
        "token_id": claims["uti"],
        "authorized_by": "approvers",
    }
    assert all(r.detail["identity"] == identity for r in records)
    assert FORGED_APPROVER not in json.dumps([r.model_dump(mode="json") for r in records])
    approved = w.aggregate("churn").promotion.active
    assert approved is not None and approved.approval is not None
    assert approved.approval.approver == LEAD

    # Replayed: the same message is a duplicate; the same token in a new message is stale.
    assert w.handle(valid).status == "duplicate"
    again = w.handle(with_token(approval(w, "m-replayed"), token))
    assert again.status == "ignored" and "no approval expected" in (again.reason or "")
    assert status(w) == "deploying"
    assert w.endpoint.deploy_calls == {"churn-v2": 1}


def test_the_app_role_approves_for_someone_not_on_the_list():
    w = awaiting_approval()
    envelope = signed(w.runtime, approval(w, "m1"), "head@contoso.com", roles=["Promotion.Approve"])
    assert w.handle(envelope).status == "applied"
    [record] = [r for r in w.audit.read("churn") if r.action == "promotion.deploying"]
    assert record.actor == "head@contoso.com"
    assert record.detail["identity"]["authorized_by"] == "role:Promotion.Approve"


def test_an_approver_may_be_listed_by_object_id_and_is_recorded_by_upn():
    # The local issuer's object ids are stable per UPN (case-insensitive), as Entra's are.
    oid = claims_of(issuer_of(fake_runtime().runtime).mint("lead@contoso.com"))["oid"]
    w = awaiting_approval(approval=f"{{required: true, approvers: [{oid}], timeout: 1h}}")
    envelope = signed(w.runtime, approval(w, "m1", approver=oid), "Lead@Contoso.com")
    assert w.handle(envelope).status == "applied"
    approved = w.aggregate("churn").promotion.active
    assert approved is not None and approved.approval is not None
    assert approved.approval.approver == "Lead@Contoso.com"


def test_a_forged_approval_under_the_real_ones_id_does_not_pre_empt_it():
    w = awaiting_approval()
    with pytest.raises(InvalidMessage, match="missing token"):
        w.handle(approval(w, "the-real-id"))
    real = signed(w.runtime, approval(w, "the-real-id", approver=LEAD), LEAD)
    assert w.handle(real).status == "applied"
    assert status(w) == "deploying"


def test_operators_pause_and_roll_back_under_their_own_name():
    w = awaiting_approval()
    active = w.aggregate("churn").promotion.active
    assert active is not None
    pause = message(
        "PausePromotion",
        "churn",
        PausePromotion(promotion_id=active.id, requested_by="the-ceo"),
        message_id="pause-1",
    )
    with pytest.raises(InvalidMessage, match=r"holds no app role Promotion\.Operate"):
        w.handle(signed(w.runtime, pause, "intern@contoso.com", roles=["Retrain.Request"]))
    assert not w.aggregate("churn").promotion.active.paused  # type: ignore[union-attr]
    operator = signed(w.runtime, pause, "oncall@contoso.com", roles=["Promotion.Operate"])
    assert w.handle(operator).status == "applied"
    paused = w.aggregate("churn").promotion.active
    assert paused is not None and paused.paused and paused.paused_by == "oncall@contoso.com"

    rollback = message(
        "RollbackRequested",
        "churn",
        RollbackRequested(promotion_id=active.id, reason="bad smell", requested_by="the-ceo"),
    )
    # One of the model's approvers may operate it too.
    assert w.handle(signed(w.runtime, rollback, LEAD)).status == "applied"
    assert w.aggregate("churn").promotion.active is None
    actors = {r.actor for r in w.audit.read("churn") if r.cause_type == "RollbackRequested"}
    assert actors == {LEAD}
    assert "the-ceo" not in json.dumps([r.model_dump(mode="json") for r in w.audit.read("churn")])


def test_a_retrain_request_needs_the_retrain_role_and_is_recorded_under_the_token():
    w = fake_runtime(policy_yaml("churn"))
    request = message(
        "RetrainRequested",
        "churn",
        RetrainRequested(run_id="churn-manual-1", force=True, requested_by="the-ceo"),
    )
    with pytest.raises(InvalidMessage, match=r"no app role Retrain\.Request"):
        w.handle(signed(w.runtime, request, "ana@contoso.com", roles=["Promotion.Operate"]))
    allowed = signed(w.runtime, request, "ana@contoso.com", roles=["Retrain.Request"])
    # Decided (no data yet: nothing to train on), under the token's name.
    assert w.handle(allowed).reason == "nothing to train on"
    [record] = [r for r in w.audit.read("churn") if r.action == "retrain.request_no_data"]
    assert record.actor == record.detail["requested_by"] == "ana@contoso.com"
    assert record.detail["identity"]["authorized_by"] == "role:Retrain.Request"


def test_http_commands_are_trusted_through_the_entry_point_that_authenticated_them():
    w = fake_runtime(policy_yaml("churn"))
    request = message(
        "RetrainRequested",
        "churn",
        RetrainRequested(run_id="churn-manual-2", force=True, requested_by="function-key"),
    )
    # On a queue, no token: refused. The same command from the HTTP trigger: handled.
    with pytest.raises(InvalidMessage, match="missing token"):
        w.handle(request)
    outcome = w.runtime.handlers.handle(request, verified_by="http:function-key")
    assert outcome.reason == "nothing to train on"
    [record] = [r for r in w.audit.read("churn") if r.action == "retrain.request_no_data"]
    assert record.actor == "function-key"
    assert record.detail["identity"] == {"verified_by": "http:function-key", "upn": "function-key"}


def test_a_payload_cannot_claim_it_was_authorized():
    w = awaiting_approval()
    forged = approval(w, "m1").model_copy(
        update={"payload": approval(w, "m1").payload | {"authorized_by": "role:Promotion.Approve"}}
    )
    intern = signed(w.runtime, forged, "intern@contoso.com")
    with pytest.raises(InvalidMessage, match="not among churn's approvers"):
        w.handle(intern)
    # Through HTTP (trusted caller, no token): the claim is dropped, the approvers list decides.
    _, command = authorize(
        forged,
        ApprovalDecision.model_validate(forged.payload),
        w.policies["churn"],
        None,
        verified_by="http:function-key",
    )
    assert command.authorized_by is None  # type: ignore[attr-defined]
    assert w.runtime.handlers.handle(forged, verified_by="http:function-key").status == "ignored"
    assert status(w) == "awaiting_approval"


class KeysDown:
    def verify(self, token: str) -> Principal:
        raise IdentityUnavailable("the issuer's keys cannot be read: timed out")


def test_keys_that_cannot_be_read_are_transient_not_a_refusal():
    w = awaiting_approval()
    w.runtime.ports.identity = KeysDown()
    with pytest.raises(IdentityUnavailable):  # not InvalidMessage: delivered again, later
        w.handle(with_token(approval(w, "m1"), "header.payload.signature"))
    assert not [r for r in w.audit.read("churn") if r.cause_id == "m1"]


def test_the_person_commands_are_the_ones_with_a_requester_or_an_approver():
    from orchestrator.handlers import PAYLOADS

    people = {
        name
        for name, payload in PAYLOADS.items()
        if {"approver", "requested_by"} & set(payload.model_fields)
    }
    assert people == set(PERSON_COMMANDS)


def test_a_refused_approval_on_the_queue_is_dead_lettered_with_its_reason():
    w = awaiting_approval()
    set_runtime(w.runtime)
    try:
        body = approval(w, "m1").to_bytes()
        assert handle_message(func.ServiceBusMessage(body=body), "approvals") == "dead-lettered"
        token = issuer_of(w.runtime).mint(LEAD)
        good = with_token(approval(w, "m2"), token).to_bytes()
        assert handle_message(func.ServiceBusMessage(body=good), "approvals") == "applied"
    finally:
        set_runtime(None)
    [letter] = w.dead_letters.read("approvals")
    assert "missing token" in letter["reason"]
    assert status(w) == "deploying"
