"""The live dashboard, served by the app itself behind the API's authentication (a function key;
App Service authentication in Azure when it is on). docs/dashboard.md.

- GET /api/dashboard: the page (plain HTML, our script and uPlot, vendored, no build step).
- GET /api/dashboard/assets/{name}: its script, style sheet and uPlot (a fixed list).
- GET /api/dashboard/state: one JSON document the page polls: every model's status (production,
  last known-good, the active promotion, each ring, the shadow stage), the active (or else the
  last) promotion's audit trail, its traffic over time and gate evidence, recent runs, the
  newest dead letters, and how a person signs in.
- POST /api/dashboard/sign-in: under devhost only (DEVHOST_LOCAL_SIGN_IN, never in Azure nor
  with ENTRA_TENANT_ID), a token from the local issuer for the name given, as the CLI's `--as`
  mints one: the stand-in for Entra ID's sign-in page. In Azure the page takes the person's
  access token from App Service authentication (`/.auth/me`) instead; elsewhere this route
  answers 404.

The page acts through the person-command routes of triggers/http_api.py with that token, which
the app verifies as it verifies every person's command (orchestrator/people.py).

Cold start: the static files are read on first request, the runtime is imported inside each
function.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import azure.functions as func

from triggers.http_api import json_response, problem, unsupported_media_type

log = logging.getLogger(__name__)

bp = func.Blueprint()

STATIC = Path(__file__).resolve().parent / "static" / "dashboard"
ASSETS = {
    "dashboard.js": ("dashboard.js", "text/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}
AUDIT_SHOWN = 500  # a promotion's newest audit records the page gets (its life is short)
DEAD_LETTERS_SHOWN = 10  # each one read per poll: a few suffice to see that something failed
SIGN_IN_LIFETIME = timedelta(hours=1)
DASHBOARD_PATH = "/api/dashboard"  # where the page is when its request names no path
# The page is ours and loads nothing from elsewhere: say so to the browser.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Where the candidate's share of live traffic on the model's endpoint (the first ring) stands
# once a promotion has entered a state (canary steps, and a production bake with a holdback,
# carry their weight in the record's detail). Walking the later rings, the first serves the
# candidate alone: entering a ring hands a holdback's share to it (promotion/machine.py).
_FULL_TRAFFIC = {"promoting", "production_bake", "ring", "completed"}
_WEIGHT_IN_DETAIL = {"canary", "production_bake"}


@cache
def _static(relative: str) -> bytes:
    return (STATIC / relative).read_bytes()


@bp.route(route="dashboard", methods=["GET"])
def dashboard_page(req: func.HttpRequest) -> func.HttpResponse:
    # The assets need the key too: the page hands on the `code` it was opened with.
    code = req.params.get("code")
    query = html.escape("?" + urlencode({"code": code})) if code else ""
    text = (
        _static("index.html")
        .decode()
        .replace("{{query}}", query)
        .replace("{{sign_in}}", html.escape(sign_in_link(req.url)))
    )
    return func.HttpResponse(
        text, status_code=200, mimetype="text/html", charset="utf-8", headers=SECURITY_HEADERS
    )


@bp.route(route="dashboard/assets/{name}", methods=["GET"])
def dashboard_asset(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name", "")
    found = ASSETS.get(name)
    if found is None:
        return problem(404, "Unknown asset", f"name: no dashboard asset {name!r}")
    relative, mimetype = found
    return func.HttpResponse(
        _static(relative),
        status_code=200,
        mimetype=mimetype,
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


@bp.route(route="dashboard/state", methods=["GET"])
def dashboard_state(req: func.HttpRequest) -> func.HttpResponse:
    from orchestrator.bootstrap import get_runtime

    runtime = get_runtime()
    models = [model_view(runtime.queries, model) for model in sorted(runtime.policies)]
    return json_response(
        {
            "generated_at": datetime.now(UTC).isoformat(),
            "sign_in": sign_in_mode(runtime.settings),
            "models": models,
            "dead_letters": recent_dead_letters(runtime, DEAD_LETTERS_SHOWN),
        },
        headers={"Cache-Control": "no-store"},
    )


@bp.route(route="dashboard/sign-in", methods=["POST"])
def dashboard_sign_in(req: func.HttpRequest) -> func.HttpResponse:
    from orchestrator.bootstrap import get_runtime
    from orchestrator.people import OPERATE
    from triggers.payloads import BadPayload, SignInBody, parse_json_body

    settings = get_runtime().settings
    refused = local_sign_in_refused(settings)
    if refused is not None:
        return problem(404, "No local sign-in", refused)
    if (unsupported := unsupported_media_type(req)) is not None:
        return unsupported
    try:
        body = parse_json_body(req.get_body(), SignInBody)
    except BadPayload as exc:
        return problem(400, "Invalid request body", exc.reason)
    from adapters.local_issuer import LocalIssuer

    # As the CLI's `--as`: the operator role, as if an admin had assigned it; approvals are
    # still decided by the model's approvers list (no Promotion.Approve role).
    roles = [OPERATE]
    issued = datetime.now(UTC)
    token = LocalIssuer(settings.local_issuer_dir).mint(
        body.name,
        roles=roles,
        audience=settings.api_audiences[0],
        lifetime=SIGN_IN_LIFETIME,
        now=issued,
    )
    log.info("dashboard: local issuer signed in %s", body.name)
    return json_response(
        {
            "token": token,
            "name": body.name,
            "roles": roles,
            "expires_at": (issued.replace(microsecond=0) + SIGN_IN_LIFETIME).isoformat(),
        },
        headers={"Cache-Control": "no-store"},
    )


def sign_in_link(page_url: str) -> str:
    """App Service authentication's sign-in, coming back to the page at `page_url` (its path,
    its query without the function key: `code`, which the host reads in any case): after the
    sign-in the browser lands on the dashboard, not on the site's root, and the key never goes
    through Entra ID, the callback or the browser's history."""
    parts = urlsplit(page_url)
    path = parts.path if parts.path.startswith("/") and not parts.path.startswith("//") else ""
    kept = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name.lower() != "code"
    ]
    back = (path or DASHBOARD_PATH) + ("?" + urlencode(kept) if kept else "")
    return "/.auth/login/aad?" + urlencode({"post_login_redirect_uri": back})


# ------------------------------------------------------------------ the state document


def local_sign_in_refused(settings: Any) -> str | None:
    """Why POST /api/dashboard/sign-in mints nothing here, or None where it may: only under
    devhost (DEVHOST_LOCAL_SIGN_IN, which devhost sets), never in Azure (WEBSITE_INSTANCE_ID)
    nor where the app verifies Entra ID's tokens."""
    if settings.website_instance_id or settings.entra_tenant_id:
        return "the app verifies Entra ID tokens: sign in with App Service authentication"
    if not settings.devhost_local_sign_in:
        return (
            "the local sign-in exists under devhost only (DEVHOST_LOCAL_SIGN_IN): elsewhere, "
            "send a token the app verifies (e.g. the CLI's `--as`)"
        )
    return None


def sign_in_mode(settings: Any) -> dict[str, Any]:
    """How the page gets a person's token: the local issuer (devhost), App Service
    authentication (Entra ID), or none here (the page can only read)."""
    if settings.entra_tenant_id:
        return {"mode": "app-service", "audience": settings.api_audiences[0]}
    if local_sign_in_refused(settings) is None:
        return {"mode": "local", "audience": settings.api_audiences[0]}
    return {"mode": "none", "audience": settings.api_audiences[0]}


def model_view(queries: Any, model: str) -> dict[str, Any]:
    """The model's status and the promotion the page shows: the active one, or else the last."""
    status = queries.model_status(model)
    active = status.get("active_promotion")
    shown_id = active["id"] if active else None
    if shown_id is None and status.get("recent_promotions"):
        shown_id = status["recent_promotions"][-1]["promotion_id"]
    promotion: dict[str, Any] | None = None
    if shown_id is not None:
        # The newest records: a long trail is cut at its start, never at what happened last.
        tail, complete = queries.audit_tail(model, shown_id, AUDIT_SHOWN)
        records = [record.model_dump(mode="json") for record in tail]
        history = next(
            (h for h in status.get("recent_promotions") or [] if h["promotion_id"] == shown_id),
            None,
        )
        promotion = {
            "id": shown_id,
            "active": active,
            "outcome": history,
            "audit": records,
            "audit_complete": complete,
            "traffic": traffic_timeline(records, active),
            "evidence": gate_evidence(records),
        }
    return {"model": model, "status": status, "promotion": promotion}


def traffic_timeline(
    records: list[dict[str, Any]], active: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The candidate's share of live traffic (percent) on the model's endpoint after each
    state change, oldest first, from the promotion's audit trail, and the share of live
    requests mirrored to it (`mirror`, the shadow stage: copies nobody sees, so no live
    weight); the active promotion's current weights close the series."""
    points: list[dict[str, Any]] = []
    weight = 0
    for record in records:
        to_state = record.get("to_state")
        if not to_state:
            continue
        detail = record.get("detail") or {}
        traffic = detail.get("traffic")
        staying = bool(points) and points[-1]["state"] == to_state
        mirror = 0
        if to_state == "shadow":
            # Entering the shadow names its percent; its gate records keep it.
            named = detail.get("mirror")
            mirror = named if isinstance(named, int) else (points[-1]["mirror"] if staying else 0)
        if to_state in _WEIGHT_IN_DETAIL and isinstance(traffic, int):
            weight = traffic  # a new step (or bake) names its weight
        elif to_state == "canary" or (to_state in _WEIGHT_IN_DETAIL and staying):
            pass  # a gate's record within the step or the bake keeps its weight
        elif to_state in _FULL_TRAFFIC:
            weight = 100
        else:  # before the canary, and after a rollback, a rejection or a failure
            weight = 0
        points.append(
            {"time": record["time"], "weight": weight, "mirror": mirror, "state": to_state}
        )
    if active is not None:
        in_shadow = active.get("status") == "shadow"
        points.append(
            {
                "time": datetime.now(UTC).isoformat(),
                "weight": int(active.get("traffic_weight") or 0),
                "mirror": int(active.get("shadow_percent") or 0) if in_shadow else 0,
                "state": active.get("status"),
            }
        )
    return points


def gate_evidence(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every gate decision in the trail with what it saw (samples, estimates, bounds, verdict),
    oldest first: one entry per gate per check."""
    checks: list[dict[str, Any]] = []
    for record in records:
        detail = record.get("detail") or {}
        evidence = detail.get("evidence")
        if not isinstance(evidence, list):
            continue
        for item in evidence:
            if isinstance(item, dict) and "gate" in item:
                checks.append(
                    {
                        "time": record["time"],
                        "step": detail.get("step"),
                        "action": record.get("action"),
                    }
                    | item
                )
    return checks


def recent_dead_letters(runtime: Any, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` dead letters (names listed, only those read), newest first."""
    from azure.core.exceptions import ResourceNotFoundError

    from orchestrator.bootstrap import DEAD_LETTER_CONTAINER

    container = runtime.blob_service.get_container_client(DEAD_LETTER_CONTAINER)
    try:
        blobs = [(blob.last_modified, blob.name) for blob in container.list_blobs()]
    except ResourceNotFoundError:
        return []
    newest = sorted(blobs, reverse=True)[:limit]
    shown = []
    for _, name in newest:
        found = runtime.dead_letters.get(name)
        if found is None:
            continue
        record, _ = found
        shown.append(
            {
                "name": name,
                "source": record.get("source"),
                "reason": record.get("reason"),
                "dead_lettered_at": record.get("dead_lettered_at"),
                "replayed_at": record.get("replayed_at"),
            }
        )
    return shown
