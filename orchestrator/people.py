"""Who may move a promotion: a person's command is from whom its token says, or from nobody.

A person's commands (`PERSON_COMMANDS`: approvals, rollback, promote-now, pause, resume, a
retrain request) arriving on a queue must carry a bearer token in the envelope (`auth`). The
one check, `authorize`, called by `MessageHandlers.handle` right after the payload is parsed:

1. the token is verified (`IdentityVerifier`: signature, issuer, audience, tenant, lifetime);
2. its principal must hold the command's app role (`Promotion.Approve`, `Promotion.Operate`,
   `Retrain.Request`) or be one of the model's `approval.approvers` (object id or UPN,
   case-insensitively);
3. the command's `approver` / `requested_by` is replaced by the token's UPN (its object id when
   it has none): what the payload claims is never believed. The envelope returned carries the
   principal (`VerifiedEnvelope.identity`), which the audit records (oid, name, UPN, token id).

A refusal raises `Refused` (an InvalidMessage: the handler audits it, the trigger dead-letters
it). A replayed message is still what it was: a duplicate by message id, or stale by content.

HTTP entry points authenticate their caller themselves (the function key, or App Service
authentication) and write who into the command; they say so with `verified_by` (e.g.
"http:function-key"), which only code in this process can pass, never a message.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, PrivateAttr

from domain.policy import ModelPolicy
from orchestrator.messages import Envelope, InvalidMessage
from orchestrator.ports import IdentityVerifier, Principal, Unauthenticated

APPROVE = "Promotion.Approve"
OPERATE = "Promotion.Operate"
RETRAIN = "Retrain.Request"

# Message type -> the app role that allows it.
PERSON_COMMANDS: dict[str, str] = {
    "ApprovalDecision": APPROVE,
    "RollbackRequested": OPERATE,
    "PromoteNow": OPERATE,
    "PausePromotion": OPERATE,
    "ResumePromotion": OPERATE,
    "RetrainRequested": RETRAIN,
}


class Refused(InvalidMessage):
    """A person's command from nobody verified, or from someone not allowed to send it."""


class VerifiedEnvelope(Envelope):
    """An envelope whose sender `authorize` has verified. The identity lives in this process
    only: it is never parsed from, nor written into, a message."""

    _identity: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)


def actor_field(message_type: str) -> str:
    return "approver" if message_type == "ApprovalDecision" else "requested_by"


def authorize(
    envelope: Envelope,
    command: BaseModel,
    policy: ModelPolicy,
    verifier: IdentityVerifier | None,
    *,
    verified_by: str | None = None,
) -> tuple[Envelope, BaseModel]:
    """(envelope, command) with the sender's verified identity filled in; anything but a
    person's command passes unchanged. Raises Refused; IdentityUnavailable (the issuer's keys
    cannot be read) passes through: transient, the message is delivered again."""
    role = PERSON_COMMANDS.get(envelope.type)
    if role is None:
        return envelope, command
    field = actor_field(envelope.type)
    if verified_by is not None:
        # The entry point authenticated the caller and wrote who into the command.
        if "authorized_by" in type(command).model_fields:
            command = command.model_copy(update={"authorized_by": None})
        identity = {"verified_by": verified_by, "upn": getattr(command, field)}
        return _verified(envelope, command, identity), command
    principal = _authenticate(envelope, verifier)
    how = _allowed(principal, role, policy)
    if how is None:
        raise Refused(
            f"{envelope.type} refused: {principal.display} (oid {principal.object_id}) holds "
            f"no app role {role} and is not among {policy.model}'s approvers"
        )
    update: dict[str, Any] = {field: principal.display}
    if "authorized_by" in type(command).model_fields:
        update["authorized_by"] = how
    command = command.model_copy(update=update)
    identity = {
        "oid": principal.object_id,
        "name": principal.name,
        "upn": principal.upn,
        "token_id": principal.token_id,
        "authorized_by": how,
    }
    return _verified(envelope, command, identity), command


def _authenticate(envelope: Envelope, verifier: IdentityVerifier | None) -> Principal:
    if verifier is None:
        raise Refused(f"{envelope.type} refused: no identity verifier is configured")
    if not envelope.auth:
        raise Refused(f"{envelope.type} refused: missing token (the envelope has no auth)")
    try:
        return verifier.verify(envelope.auth)
    except Unauthenticated as exc:
        raise Refused(f"{envelope.type} refused: {exc.reason}") from exc


def _allowed(principal: Principal, role: str, policy: ModelPolicy) -> str | None:
    """How the principal may send the command: "role:<role>", "approvers", or None."""
    if role in principal.roles:
        return f"role:{role}"
    approvers = {name.casefold() for name in policy.approval.approvers}
    names = {principal.object_id.casefold()}
    if principal.upn:
        names.add(principal.upn.casefold())
    return "approvers" if names & approvers else None


def _verified(envelope: Envelope, command: BaseModel, identity: dict[str, Any]) -> VerifiedEnvelope:
    # The payload becomes what was verified; the token goes no further than this check.
    fields = dict(envelope) | {"payload": command.model_dump(mode="json"), "auth": None}
    verified = VerifiedEnvelope.model_construct(envelope.model_fields_set, **fields)
    verified._identity = identity
    return verified
