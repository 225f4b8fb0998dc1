"""The HTTP API. Every route needs a function key (the app's default auth level), except
GET /api/health. Bad input (a body, a query parameter, a continuation token): 400
application/problem+json naming the field; an unknown model or promotion: 404. Handlers run
synchronously; long work is started, never awaited.

A person's commands (approval, pause, resume, promote-now; rollback too when it carries one)
take the person's bearer token (`Authorization: Bearer`), verified as on a queue
(orchestrator/people.py): none is a 401, a refused one a 403, audited; the dashboard
(triggers/dashboard.py) sends them. A rollback needs a verified caller too: a person's token or
the App Service principal; the function key alone (which names nobody) only with the app
setting HTTP_KEY_ROLLBACK=true, for automation, else 401. POST /api/retrain takes the key
alone: it only starts training, and the model it makes is still promoted through the gates.
These POSTs (retrain aside) take `Content-Type: application/json` only: 415 otherwise.

Reads are bounded: GET /api/models/{model} is a summary (counts and samples, never the data
keys); runs and audit are pages (`?limit=` 1..1000, default 100, oldest first), the next
page's token in the body (`continuation`, `next`) and the headers (`x-ms-continuation`,
`Link: <next>; rel="next"`)."""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import azure.functions as func

log = logging.getLogger(__name__)

# Cold start: the orchestrator is imported inside each function, on its first invocation.

bp = func.Blueprint()

JSON = "application/json"
PROBLEM = "application/problem+json"


# A JSON answer is never to be read as anything else (e.g. HTML a browser would render).
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(document, default=str),
        status_code=status,
        mimetype=JSON,
        headers=NOSNIFF | (headers or {}),
    )


def problem(status: int, title: str, detail: str) -> func.HttpResponse:
    document = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return func.HttpResponse(
        json.dumps(document), status_code=status, mimetype=PROBLEM, headers=dict(NOSNIFF)
    )


def unsupported_media_type(req: func.HttpRequest) -> func.HttpResponse | None:
    """415 unless the body is declared JSON: a state-changing POST a browser could send from
    another site without asking first (a form, text/plain) is never taken for a command."""
    media_type = (req.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if media_type == JSON:
        return None
    return problem(
        415,
        "Unsupported media type",
        f"Content-Type: send {JSON}, not {media_type[:100] or 'none'!r}",
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_") or "model"


PRINCIPAL_HEADER = "x-ms-client-principal"
_OBJECT_ID = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_USER_NAME = (
    "preferred_username",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "upn",
    "name",
)


class Caller(NamedTuple):
    name: str  # who the command is from (its requested_by)
    verified_by: str  # how the app knows: "http:app-service:<oid>" or "http:function-key"
    roles: frozenset[str] = frozenset()  # the principal's app roles (App Service only)


# Where App Service puts a principal's app roles in X-MS-CLIENT-PRINCIPAL.
_ROLE_CLAIMS = frozenset({"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"})


FUNCTION_KEY = Caller("function-key", "http:function-key")


def requester(req: func.HttpRequest, app_service_auth: bool) -> Caller:
    """Who asked. With App Service authentication on (`app_service_auth`: WEBSITE_AUTH_ENABLED),
    the principal App Service puts in X-MS-CLIENT-PRINCIPAL (it strips that header from what
    callers send); otherwise the holder of the function key. Never a header a caller sets
    (x-requested-by, x-ms-client-principal-name): those are not read."""
    if not app_service_auth:
        return FUNCTION_KEY
    encoded = req.headers.get(PRINCIPAL_HEADER)
    if not encoded:
        return FUNCTION_KEY  # an anonymous request App Service let through: the key decides
    try:
        document = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
        claims: dict[str, str] = {}
        roles: set[str] = set()
        for claim in document.get("claims") or []:
            if isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
                claims.setdefault(claim["typ"], claim["val"])
                if claim["typ"] in _ROLE_CLAIMS:
                    roles.add(claim["val"])
        name_type = document.get("name_typ")
    except (ValueError, TypeError, AttributeError):
        log.warning("unreadable %s header: the caller is the function key holder", PRINCIPAL_HEADER)
        return FUNCTION_KEY
    name_types = (*_USER_NAME, *([name_type] if isinstance(name_type, str) else []))
    object_id = next((claims[typ] for typ in _OBJECT_ID if claims.get(typ)), None)
    name = next((claims[typ] for typ in name_types if claims.get(typ)), None) or object_id
    if not name:
        return FUNCTION_KEY
    return Caller(name[:200], f"http:app-service:{object_id or name}"[:300], frozenset(roles))


@bp.route(route="retrain", methods=["POST"])
def retrain(req: func.HttpRequest) -> func.HttpResponse:
    from orchestrator.bootstrap import get_runtime
    from orchestrator.messages import Envelope, InvalidMessage
    from retrain.commands import RetrainRequested
    from triggers.payloads import BadPayload, RetrainBody, parse_json_body

    try:
        body = parse_json_body(req.get_body(), RetrainBody)
    except BadPayload as exc:
        return problem(400, "Invalid request body", exc.reason)
    runtime = get_runtime()
    if body.model not in runtime.policies:
        return problem(404, "Unknown model", f"model: no policy for {body.model!r}")
    # An Idempotency-Key makes a retried request the same command, not a second job.
    key = req.headers.get("idempotency-key")
    suffix = uuid.uuid5(uuid.NAMESPACE_URL, key) if key else uuid.uuid4()
    # The run id is also the Azure ML job name: letters, digits, '-' and '_' only, while a
    # model name may hold a dot. Slug it as the retrain policy does for automatic runs.
    run_id = f"{_slug(body.model)}-manual-{suffix.hex[:12]}"
    caller = requester(req, runtime.settings.app_service_auth)
    command = RetrainRequested(
        run_id=run_id,
        reason=body.reason,
        data_uri=body.data_uri,
        force=body.force,
        requested_by=caller.name,
    )
    envelope = Envelope.new("RetrainRequested", body.model, command, message_id=f"http:{run_id}")
    try:
        outcome = runtime.handlers.handle(
            envelope, verified_by=caller.verified_by, raise_effect_failures=False
        )
    except InvalidMessage as exc:
        return problem(400, "Invalid request", exc.reason)
    status_url = f"/api/models/{body.model}"
    return json_response(
        {
            "run_id": run_id,
            "model": body.model,
            "status": outcome.status,
            "effects_pending": outcome.effects_pending,
            "reason": outcome.reason,
            "status_url": status_url,
        },
        status=202,
        headers={"Location": status_url},
    )


@bp.route(route="models/{model}", methods=["GET"])
def model_status(req: func.HttpRequest) -> func.HttpResponse:
    """The model's status, bounded: no data keys, counts and samples instead of lists; its
    runs and audit are the paged resources below (`links`)."""
    from orchestrator.bootstrap import get_runtime
    from orchestrator.policy_files import UnknownModel

    model = req.route_params.get("model", "")
    try:
        status = get_runtime().queries.model_status(model)
    except UnknownModel:
        return problem(404, "Unknown model", f"model: no policy for {model!r}")
    links = {
        "runs": f"/api/models/{quote(model)}/runs",
        "audit": f"/api/models/{quote(model)}/audit",
    }
    return json_response(status | {"links": links})


def paged(
    document: dict[str, Any], continuation: str | None, path: str, query: dict[str, Any]
) -> func.HttpResponse:
    """A page: the token in the body (`continuation`, `next`) and in the headers
    (`x-ms-continuation`, `Link: <next>; rel="next"`) when there is more."""
    if continuation is None:
        return json_response(document | {"continuation": None, "next": None})
    parameters = {name: value for name, value in query.items() if value is not None}
    next_url = f"{path}?{urlencode(parameters | {'continuation': continuation})}"
    headers = {"x-ms-continuation": continuation, "Link": f'<{next_url}>; rel="next"'}
    return json_response(
        document | {"continuation": continuation, "next": next_url}, headers=headers
    )


@bp.route(route="models/{model}/runs", methods=["GET"])
def model_runs(req: func.HttpRequest) -> func.HttpResponse:
    """?limit=1..1000 (100) &continuation=: the runs that ended, oldest first."""
    from orchestrator.bootstrap import get_runtime
    from orchestrator.policy_files import UnknownModel
    from orchestrator.ports import InvalidContinuation
    from triggers.payloads import BadPayload, PageQuery, parse_query

    model = req.route_params.get("model", "")
    try:
        query = parse_query(req.params, PageQuery)
        runs, continuation = get_runtime().queries.runs(
            model, limit=query.limit, continuation=query.continuation
        )
    except BadPayload as exc:
        return problem(400, "Invalid query", exc.reason)
    except InvalidContinuation as exc:
        return problem(400, "Invalid query", exc.reason)
    except UnknownModel:
        return problem(404, "Unknown model", f"model: no policy for {model!r}")
    path = f"/api/models/{quote(model)}/runs"
    return paged({"model": model, "runs": runs}, continuation, path, {"limit": query.limit})


@bp.route(route="models/{model}/audit", methods=["GET"])
def model_audit(req: func.HttpRequest) -> func.HttpResponse:
    """?promotion= &limit=1..1000 (100) &continuation=: audit records, oldest first; of one
    promotion, only its records are read."""
    from orchestrator.bootstrap import get_runtime
    from orchestrator.policy_files import UnknownModel
    from orchestrator.ports import InvalidContinuation
    from triggers.payloads import AuditQuery, BadPayload, parse_query

    model = req.route_params.get("model", "")
    try:
        query = parse_query(req.params, AuditQuery)
        page = get_runtime().queries.audit(
            model, query.promotion, limit=query.limit, continuation=query.continuation
        )
    except BadPayload as exc:
        return problem(400, "Invalid query", exc.reason)
    except InvalidContinuation as exc:
        return problem(400, "Invalid query", exc.reason)
    except UnknownModel:
        return problem(404, "Unknown model", f"model: no policy for {model!r}")
    document = {
        "model": model,
        "promotion_id": query.promotion,
        "records": [record.model_dump(mode="json") for record in page.records],
    }
    path = f"/api/models/{quote(model)}/audit"
    return paged(
        document, page.continuation, path, {"promotion": query.promotion, "limit": query.limit}
    )


@bp.route(route="promotions/{promotion_id}", methods=["GET"])
def promotion_status(req: func.HttpRequest) -> func.HttpResponse:
    """The promotion and the first page of its audit (?limit=, default 100); the rest is at
    `next` (GET /api/models/{model}/audit?promotion=...)."""
    from orchestrator.bootstrap import get_runtime
    from triggers.payloads import BadPayload, PageQuery, parse_query

    promotion_id = req.route_params.get("promotion_id", "")
    try:
        query = parse_query(req.params, PageQuery)
    except BadPayload as exc:
        return problem(400, "Invalid query", exc.reason)
    if query.continuation is not None:
        return problem(
            400, "Invalid query", "continuation: follow `next` (the model's audit resource)"
        )
    queries = get_runtime().queries
    found = queries.find_promotion(promotion_id)
    if found is None:
        return problem(404, "Unknown promotion", f"promotion_id: {promotion_id!r} not found")
    model, promotion = found
    page = queries.audit(model, promotion_id, limit=query.limit)
    document = {
        "model": model,
        "promotion": promotion,
        "audit": [record.model_dump(mode="json") for record in page.records],
    }
    path = f"/api/models/{quote(model)}/audit"
    return paged(
        document, page.continuation, path, {"promotion": promotion_id, "limit": query.limit}
    )


@bp.route(route="promotions/{promotion_id}/rollback", methods=["POST"])
def rollback(req: func.HttpRequest) -> func.HttpResponse:
    from orchestrator.bootstrap import get_runtime
    from orchestrator.messages import Envelope
    from orchestrator.people import OPERATE
    from promotion.commands import RollbackRequested
    from triggers.payloads import BadPayload, RollbackBody, parse_json_body

    promotion_id = req.route_params.get("promotion_id", "")
    runtime = get_runtime()
    token = bearer_token(req)
    caller = requester(req, runtime.settings.app_service_auth)
    if token is None and caller == FUNCTION_KEY and not runtime.settings.http_key_rollback:
        # The key alone names nobody (the dashboard hands it to every viewer): a rollback
        # needs a person, unless automation was allowed it (HTTP_KEY_ROLLBACK=true).
        return _token_required(
            "a rollback needs a verified person: send `Authorization: Bearer <access token>` "
            "(or sign in through App Service authentication); the function key alone is "
            "accepted only with the app setting HTTP_KEY_ROLLBACK=true"
        )
    if token is None and caller != FUNCTION_KEY and OPERATE not in caller.roles:
        # An App Service principal is who it says; whether it may roll back is its app role,
        # as for a token (orchestrator/people.py).
        return problem(
            403,
            "Refused",
            f"{caller.name} does not hold the app role {OPERATE!r} a rollback needs",
        )
    if (unsupported := unsupported_media_type(req)) is not None:
        return unsupported
    try:
        body = parse_json_body(req.get_body(), RollbackBody)
    except BadPayload as exc:
        return problem(400, "Invalid request body", exc.reason)
    found = runtime.queries.find_promotion(promotion_id)
    if found is None:
        return problem(404, "Unknown promotion", f"promotion_id: {promotion_id!r} not found")
    model, _ = found
    if token is not None:
        # A person's token (the dashboard): verified and audited as that person, exactly as
        # a rollback sent on the queue (orchestrator/people.py).
        command = RollbackRequested(
            promotion_id=promotion_id, reason=body.reason, requested_by=TOKEN_DECIDES
        )
        return _person_command(runtime, model, promotion_id, command, token, "rollback")
    command = RollbackRequested(
        promotion_id=promotion_id, reason=body.reason, requested_by=caller.name
    )
    envelope = Envelope.new(
        "RollbackRequested",
        model,
        command,
        promotion_id=promotion_id,
        message_id=f"http:rollback:{uuid.uuid4().hex}",
    )
    outcome = runtime.handlers.handle(
        envelope, verified_by=caller.verified_by, raise_effect_failures=False
    )
    if outcome.status == "ignored":
        return problem(409, "Rollback not applied", outcome.reason or "promotion is not active")
    return json_response(
        {
            "promotion_id": promotion_id,
            "model": model,
            "status": outcome.status,
            # Saved either way; a pending effect (the endpoint down) is retried by the outbox
            # and shows in the model's status (pending_effects, traffic_alert).
            "effects_pending": outcome.effects_pending,
            "reason": outcome.reason,
            "status_url": f"/api/promotions/{promotion_id}",
        },
        status=202,
    )


# ------------------------------------------------------------------ a person's commands, by token
#
# Approve or reject, pause, resume, promote now (and a rollback sent with a token): the caller
# is a person, who the bearer token in `Authorization` says (an Entra ID access token for the
# API in Azure; the local issuer's locally). The app verifies it exactly as a command sent on
# the queue (orchestrator/people.py: signature, issuer, audience, tenant, lifetime, then the
# app role or the policy's approvers), and the audit names the token's principal. No token:
# 401; a token refused: 403, audited (message.rejected); a command the promotion cannot take
# now (not awaiting approval, another step, already paused): 409.

TOKEN_DECIDES = "bearer-token"  # a placeholder the verified principal replaces


def bearer_token(req: func.HttpRequest) -> str | None:
    """The token in `Authorization: Bearer <token>`, or None."""
    scheme, _, token = (req.headers.get("authorization") or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


TOKEN_REQUIRED = (
    "Authorization: send `Bearer <access token>` for the API (Entra ID in Azure; locally "
    "the local issuer's, e.g. from the dashboard's sign-in)"
)


def _token_required(detail: str = TOKEN_REQUIRED) -> func.HttpResponse:
    response = problem(401, "A person's token is required", detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="retrain-orchestrator"'
    return response


def _person_command(
    runtime: Any, model: str, promotion_id: str, command: Any, token: str, kind: str
) -> func.HttpResponse:
    from orchestrator.messages import Envelope, InvalidMessage
    from orchestrator.people import Refused
    from orchestrator.ports import IdentityUnavailable

    envelope = Envelope.new(
        type(command).__name__,
        model,
        command,
        promotion_id=promotion_id,
        message_id=f"http:{kind}:{uuid.uuid4().hex}",
    ).model_copy(update={"auth": token})
    try:
        outcome = runtime.handlers.handle(envelope, raise_effect_failures=False)
    except IdentityUnavailable as exc:
        return problem(503, "Identity provider unavailable", str(exc))
    except Refused as exc:
        # The sender: no valid token, or someone not allowed (audited as message.rejected).
        return problem(403, "Refused", exc.reason)
    except InvalidMessage as exc:
        # The command itself, as the handler reads it against the policy.
        return problem(400, "Invalid request", exc.reason)
    if outcome.status == "ignored":
        return problem(409, f"{type(command).__name__} not applied", outcome.reason or "")
    return json_response(
        {
            "promotion_id": promotion_id,
            "model": model,
            "status": outcome.status,
            "effects_pending": outcome.effects_pending,
            "reason": outcome.reason,
            "status_url": f"/api/promotions/{promotion_id}",
        },
        status=202,
    )


def _promotion_route(req: func.HttpRequest, schema: type[Any], build: Any, kind: str) -> Any:
    """Token, body, promotion, then the command `build(promotion_id, body)` sent as the person."""
    from orchestrator.bootstrap import get_runtime
    from triggers.payloads import BadPayload, parse_json_body

    promotion_id = req.route_params.get("promotion_id", "")
    token = bearer_token(req)
    if token is None:
        return _token_required()
    if (unsupported := unsupported_media_type(req)) is not None:
        return unsupported
    try:
        body = parse_json_body(req.get_body(), schema)
    except BadPayload as exc:
        return problem(400, "Invalid request body", exc.reason)
    runtime = get_runtime()
    found = runtime.queries.find_promotion(promotion_id)
    if found is None:
        return problem(404, "Unknown promotion", f"promotion_id: {promotion_id!r} not found")
    model, _ = found
    command = build(promotion_id, body)
    return _person_command(runtime, model, promotion_id, command, token, kind)


@bp.route(route="promotions/{promotion_id}/approval", methods=["POST"])
def approval(req: func.HttpRequest) -> func.HttpResponse:
    """{"decision": "approve"|"reject", "step", "candidate_version", "comment"}."""
    from promotion.commands import ApprovalDecision
    from triggers.payloads import ApprovalBody

    def build(promotion_id: str, body: ApprovalBody) -> ApprovalDecision:
        return ApprovalDecision(
            promotion_id=promotion_id,
            step=body.step,
            candidate_version=body.candidate_version,
            decision=body.decision,
            approver=TOKEN_DECIDES,
            comment=body.comment,
        )

    return _promotion_route(req, ApprovalBody, build, "approval")


@bp.route(route="promotions/{promotion_id}/promote-now", methods=["POST"])
def promote_now(req: func.HttpRequest) -> func.HttpResponse:
    """{"reason"}: skip the remaining canary steps (100 % on the candidate, then the bake)."""
    from promotion.commands import PromoteNow
    from triggers.payloads import PromoteNowBody

    def build(promotion_id: str, body: PromoteNowBody) -> PromoteNow:
        return PromoteNow(promotion_id=promotion_id, reason=body.reason, requested_by=TOKEN_DECIDES)

    return _promotion_route(req, PromoteNowBody, build, "promote-now")


@bp.route(route="promotions/{promotion_id}/pause", methods=["POST"])
def pause(req: func.HttpRequest) -> func.HttpResponse:
    """{"reason"} (optional): hold the promotion where it is."""
    from promotion.commands import PausePromotion
    from triggers.payloads import PauseResumeBody

    def build(promotion_id: str, body: PauseResumeBody) -> PausePromotion:
        return PausePromotion(
            promotion_id=promotion_id, reason=body.reason, requested_by=TOKEN_DECIDES
        )

    return _promotion_route(req, PauseResumeBody, build, "pause")


@bp.route(route="promotions/{promotion_id}/resume", methods=["POST"])
def resume(req: func.HttpRequest) -> func.HttpResponse:
    """{"reason"} (optional): carry on from where it was paused."""
    from promotion.commands import ResumePromotion
    from triggers.payloads import PauseResumeBody

    def build(promotion_id: str, body: PauseResumeBody) -> ResumePromotion:
        return ResumePromotion(
            promotion_id=promotion_id, reason=body.reason, requested_by=TOKEN_DECIDES
        )

    return _promotion_route(req, PauseResumeBody, build, "resume")
