"""The dashboard's routes without a browser: the page and its fixed list of assets, the state
document the page polls (on real Azurite: the status, the promotion's audit, traffic and gate
evidence, dead letters), and the local sign-in, whose token the app then verifies like any
person's (and which does not exist when the app verifies Entra ID's tokens)."""

from __future__ import annotations

import html
import json
import os
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest

from orchestrator.bootstrap import set_runtime
from orchestrator.messages import Envelope
from tests.dashboard.conftest import rings_world, walk_to
from tests.fakes import start_promotion
from tests.harness import issuer_of
from tests.orchestrator.test_handlers import LEAD, canary_policy
from tests.triggers.test_triggers import FixedMetrics, InMemoryEndpoint
from triggers import dashboard, http_api

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def user(builder: Any) -> Any:
    return builder._function.get_user_function()


def get(route: Any, params: dict[str, str] | None = None, **route_params: str) -> Any:
    request = func.HttpRequest(
        "GET",
        "http://localhost/api/dashboard",
        params=params or {},
        route_params=route_params,
        body=b"",
    )
    return user(route)(request)


def post(route: Any, body: Any, headers: dict[str, str] | None = None, **route_params: str) -> Any:
    request = func.HttpRequest(
        "POST",
        "http://localhost/api/x",
        headers={"content-type": "application/json"} | (headers or {}),
        params={},
        route_params=route_params,
        body=json.dumps(body).encode(),
    )
    return user(route)(request)


def test_the_page_hands_its_key_to_its_assets_escaped_and_forbids_anything_foreign():
    response = get(dashboard.dashboard_page, {"code": 'k"e<y&'})
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    text = response.get_body().decode()
    assert 'src="dashboard/assets/dashboard.js?code=k%22e%3Cy%26"' in text
    assert "{{query}}" not in text and 'k"e<y' not in text
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "base-uri 'none'" in policy and "form-action 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "{{query}}" not in get(dashboard.dashboard_page).get_body().decode()


def test_the_sign_in_comes_back_to_the_page_without_its_key():
    """App Service authentication's sign-in link names the dashboard's own address to come back
    to (not the site's root), its query kept but never the function key."""
    request = func.HttpRequest(
        "GET",
        "https://func-abc.azurewebsites.net/api/dashboard?code=secret-key&view=all",
        params={"code": "secret-key", "view": "all"},
        body=b"",
    )
    text = user(dashboard.dashboard_page)(request).get_body().decode()
    [href] = re.findall(r'<a id="app-service-sign-in"[^>]* href="([^"]*)"', text)
    link = urlsplit(html.unescape(href))
    assert (link.scheme, link.netloc, link.path) == ("", "", "/.auth/login/aad")
    assert parse_qsl(link.query) == [("post_login_redirect_uri", "/api/dashboard?view=all")]
    assert "secret-key" not in href and "{{sign_in}}" not in text


@pytest.mark.parametrize(
    ("url", "back"),
    [
        ("http://localhost/api/dashboard", "/api/dashboard"),
        ("https://func-abc.azurewebsites.net/api/dashboard?code=k&CODE=k&Code=k", "/api/dashboard"),
        (
            "https://func-abc.azurewebsites.net/orchestrator/dashboard?model=churn&code=k&empty=",
            "/orchestrator/dashboard?model=churn&empty=",
        ),
    ],
    ids=["no-query", "every-spelling-of-the-key", "another-route-prefix"],
)
def test_the_sign_in_link_names_the_page_s_own_address(url, back):
    link = urlsplit(dashboard.sign_in_link(url))
    assert link.path == "/.auth/login/aad"
    assert parse_qsl(link.query, keep_blank_values=True) == [("post_login_redirect_uri", back)]


@pytest.mark.parametrize(
    ("name", "mimetype", "starts"),
    [
        ("dashboard.js", "text/javascript", b"// The dashboard's script"),
        ("uPlot.iife.min.js", "text/javascript", b"/*! https://github.com/leeoniya/uPlot"),
        ("uPlot.min.css", "text/css", b".uplot"),
        ("dashboard.css", "text/css", b":root"),
    ],
)
def test_each_asset_is_served_with_its_type(name, mimetype, starts):
    response = get(dashboard.dashboard_asset, name=name)
    assert (response.status_code, response.mimetype) == (200, mimetype)
    assert response.get_body().startswith(starts)


@pytest.mark.parametrize(
    "name", ["index.html", "../dashboard.py", "vendor", "%2e%2e%2fhttp_api.py"]
)
def test_anything_else_is_not_an_asset(name):
    assert get(dashboard.dashboard_asset, name=name).status_code == 404


@pytest.fixture
def canary_runtime(make_runtime):
    endpoint = InMemoryEndpoint()
    runtime = make_runtime(
        {"churn": canary_policy()},
        endpoints=lambda policy: endpoint,
        metrics=FixedMetrics(),
        DEVHOST_LOCAL_SIGN_IN="1",  # as devhost sets it
    )
    set_runtime(runtime)
    yield runtime
    set_runtime(None)


def state_of() -> dict[str, Any]:
    response = get(dashboard.dashboard_state)
    assert response.status_code == 200
    return json.loads(response.get_body())


def test_the_state_shows_the_promotion_its_audit_traffic_and_the_newest_dead_letters(
    canary_runtime,
):
    runtime = canary_runtime
    start = Envelope.new("StartPromotion", "churn", {"candidate_version": "1"})
    runtime.handlers.handle(runtime.signer.sign(start))
    runtime.dead_letters.record("service-bus", "not a command: bad json", b"{")

    response = get(dashboard.dashboard_state)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    document = json.loads(response.get_body())
    assert document["sign_in"] == {"mode": "local", "audience": "api://retrain-orchestrator-local"}
    [view] = document["models"]
    assert view["model"] == "churn"
    active = view["status"]["active_promotion"]
    assert active["status"] == "awaiting_approval"
    promotion = view["promotion"]
    assert promotion["id"] == active["id"] and promotion["outcome"] is None
    states = [record["to_state"] for record in promotion["audit"] if record["to_state"]]
    assert states[-1] == "awaiting_approval"
    assert [point["weight"] for point in promotion["traffic"]] == [0] * len(promotion["traffic"])
    staging = [check for check in promotion["evidence"] if check["step"] == "staging"]
    assert (
        staging
        and staging[0]["gate"].startswith("threshold:auc")
        and staging[0]["outcome"] == "pass"
    )
    assert staging[0]["values"] == {"candidate": 0.95}
    newest = document["dead_letters"][0]
    assert (newest["source"], newest["reason"]) == ("service-bus", "not a command: bad json")

    # Signed in through the page, the approver approves with that token; the state shows it.
    signed = post(dashboard.dashboard_sign_in, {"name": LEAD})
    assert signed.status_code == 200
    token = json.loads(signed.get_body())["token"]
    assert issuer_of(runtime).verifier().verify(token).upn == LEAD
    body = {"decision": "approve", "step": active["step"], "candidate_version": "1"}
    answer = post(
        http_api.approval, body, {"authorization": f"Bearer {token}"}, promotion_id=active["id"]
    )
    assert answer.status_code == 202
    promotion = state_of()["models"][0]["promotion"]
    assert promotion["active"]["approval"]["approver"] == LEAD
    [record] = [r for r in promotion["audit"] if r["action"] == "promotion.deploying"]
    assert record["actor"] == LEAD


def test_traffic_over_time_follows_the_states_and_closes_at_the_current_weight():
    records = [
        {"time": "2026-12-01T10:00:00+00:00", "to_state": "deploying", "detail": {}},
        {"time": "2026-12-01T10:01:00+00:00", "to_state": "canary", "detail": {"traffic": 10}},
        {"time": "2026-12-01T10:02:00+00:00", "action": "gate.waiting", "detail": {}},
        {"time": "2026-12-01T10:02:30+00:00", "to_state": "canary", "detail": {"step": "canary-1"}},
        {"time": "2026-12-01T10:03:00+00:00", "to_state": "canary", "detail": {"traffic": 25}},
        {"time": "2026-12-01T10:04:00+00:00", "to_state": "production_bake", "detail": {}},
        {"time": "2026-12-01T10:05:00+00:00", "to_state": "rolling_back", "detail": {}},
    ]
    weights = [point["weight"] for point in dashboard.traffic_timeline(records, None)]
    assert weights == [0, 10, 10, 25, 100, 0]
    live = dashboard.traffic_timeline(records[:2], {"traffic_weight": 10, "status": "canary"})
    assert [point["weight"] for point in live] == [0, 10, 10]


def test_a_bake_with_a_holdback_is_drawn_at_its_weight_through_its_looks():
    records = [
        {"time": "2026-12-01T10:03:00+00:00", "to_state": "canary", "detail": {"traffic": 50}},
        {"time": "2026-12-01T10:04:00+00:00", "to_state": "production_bake",
         "detail": {"traffic": 95}},
        {"time": "2026-12-01T10:05:00+00:00", "to_state": "production_bake",
         "detail": {"gate": "bake"}},
        {"time": "2026-12-01T10:06:00+00:00", "to_state": "completed", "detail": {}},
    ]  # fmt: skip
    weights = [point["weight"] for point in dashboard.traffic_timeline(records, None)]
    assert weights == [50, 95, 95, 100]


@pytest.mark.parametrize(
    "name",
    ["", " lead", 7, None, "lead\n", "le\u202ead@contoso.com", "<b>lead</b>", "lead @x.com"],
)
def test_a_sign_in_needs_a_name(canary_runtime, name):
    response = post(dashboard.dashboard_sign_in, {"name": name})
    assert response.status_code == 400
    assert json.loads(response.get_body())["detail"].startswith("name")


def test_no_local_sign_in_where_the_app_verifies_entra_id_tokens(make_runtime):
    runtime = make_runtime(
        {"churn": canary_policy()},
        ENTRA_TENANT_ID=TENANT,
        ENTRA_API_AUDIENCE="api://retrain-orchestrator",
    )
    set_runtime(runtime)
    try:
        response = post(dashboard.dashboard_sign_in, {"name": LEAD})
        assert response.status_code == 404
        assert not (runtime.settings.local_issuer_dir / "private-key.pem").exists()
        assert state_of()["sign_in"] == {
            "mode": "app-service",
            "audience": "api://retrain-orchestrator",
        }
    finally:
        set_runtime(None)


def test_the_local_sign_in_is_devhost_s_alone_and_never_in_azure(make_runtime):
    """Without DEVHOST_LOCAL_SIGN_IN (which devhost sets), nobody may mint a token by naming
    someone: 404, no issuer key made, and the page offers no sign-in; in Azure (an instance
    id) not even with it."""
    runtime = make_runtime({"churn": canary_policy()})
    set_runtime(runtime)
    try:
        response = post(dashboard.dashboard_sign_in, {"name": LEAD})
        assert response.status_code == 404
        assert "DEVHOST_LOCAL_SIGN_IN" in json.loads(response.get_body())["detail"]
        assert not (runtime.settings.local_issuer_dir / "private-key.pem").exists()
        assert state_of()["sign_in"]["mode"] == "none"
    finally:
        set_runtime(None)
    settings = runtime.settings.model_copy(update={"devhost_local_sign_in": True})
    assert dashboard.local_sign_in_refused(settings) is None
    in_azure = settings.model_copy(update={"website_instance_id": "0123abcd"})
    assert "Entra ID" in str(dashboard.local_sign_in_refused(in_azure))
    assert dashboard.sign_in_mode(in_azure)["mode"] != "local"


def test_devhost_exports_the_local_sign_in_to_the_app_it_hosts(monkeypatch):
    from devhost.host.dev_host import DevHost

    monkeypatch.delenv("DEVHOST_LOCAL_SIGN_IN", raising=False)
    host = DevHost("function_app", {"RETRAIN_LOG_LEVEL": "INFO"}, azurite=False)
    host._apply_settings()
    try:
        assert os.environ["DEVHOST_LOCAL_SIGN_IN"] == "1"
    finally:
        host._restore_environment()
    assert "DEVHOST_LOCAL_SIGN_IN" not in os.environ


def test_a_sign_in_not_declared_json_is_a_415(canary_runtime):
    request = func.HttpRequest(
        "POST",
        "http://localhost/api/dashboard/sign-in",
        headers={"content-type": "text/plain"},
        params={},
        route_params={},
        body=json.dumps({"name": LEAD}).encode(),
    )
    assert user(dashboard.dashboard_sign_in)(request).status_code == 415


def test_the_state_shows_a_long_trail_s_newest_records_and_says_it_is_cut(
    canary_runtime, monkeypatch
):
    runtime = canary_runtime
    start = Envelope.new("StartPromotion", "churn", {"candidate_version": "1"})
    runtime.handlers.handle(runtime.signer.sign(start))
    promotion_id = runtime.queries.model_status("churn")["active_promotion"]["id"]
    trail = runtime.queries.audit_trail("churn", promotion_id)
    assert len(trail) > 3
    monkeypatch.setattr(dashboard, "AUDIT_SHOWN", 3)

    promotion = state_of()["models"][0]["promotion"]
    shown = [(r["aggregate_version"], r["seq"]) for r in promotion["audit"]]
    assert shown == [(r.aggregate_version, r.seq) for r in trail[-3:]]
    assert promotion["audit_complete"] is False
    monkeypatch.setattr(dashboard, "AUDIT_SHOWN", len(trail))
    assert state_of()["models"][0]["promotion"]["audit_complete"] is True


def test_shadow_is_drawn_mirrored_not_live_and_later_rings_keep_the_first_at_full_traffic():
    records = [
        {"time": "2026-12-01T10:00:00+00:00", "to_state": "deploying", "detail": {}},
        {"time": "2026-12-01T10:01:00+00:00", "to_state": "shadow", "detail": {"mirror": 20}},
        {"time": "2026-12-01T10:11:00+00:00", "to_state": "shadow", "detail": {"step": "shadow"}},
        {"time": "2026-12-01T10:11:00+00:00", "to_state": "canary", "detail": {"traffic": 50}},
        {"time": "2026-12-01T10:12:00+00:00", "to_state": "production_bake",
         "detail": {"traffic": 95}},
        {"time": "2026-12-01T10:13:00+00:00", "to_state": "ring",
         "detail": {"step": "ring-2", "endpoint": "churn-north"}},
        {"time": "2026-12-01T10:14:00+00:00", "to_state": "ring",
         "detail": {"endpoint": "churn-north", "traffic": {"churn-v2": 100, "churn-v0": 0}}},
        {"time": "2026-12-01T10:15:00+00:00", "to_state": "rolling_back", "detail": {}},
    ]  # fmt: skip
    points = dashboard.traffic_timeline(records, None)
    assert [(p["weight"], p["mirror"]) for p in points] == [
        (0, 0),
        (0, 20),
        (0, 20),
        (50, 0),
        (95, 0),
        (100, 0),  # entering a ring hands the holdback's share to the candidate
        (100, 0),  # a ring's own traffic map is not the first ring's weight
        (0, 0),
    ]
    active = {"status": "shadow", "traffic_weight": 0, "shadow_percent": 20}
    [*_, now] = dashboard.traffic_timeline(records[:2], active)
    assert (now["weight"], now["mirror"], now["state"]) == (0, 20, "shadow")
    walking = {"status": "ring", "traffic_weight": 100, "shadow_percent": 0}
    [*_, now] = dashboard.traffic_timeline(records[:6], walking)
    assert (now["weight"], now["mirror"]) == (100, 0)


@pytest.fixture
def rings_runtime(monkeypatch):
    w = rings_world()
    # The fakes have no blob service to list dead letters from (not this test's subject).
    monkeypatch.setattr(dashboard, "recent_dead_letters", lambda runtime, limit: [])
    set_runtime(w.runtime)
    yield w
    set_runtime(None)


def test_the_state_shows_the_shadow_stage_then_each_ring(rings_runtime):
    w = rings_runtime
    [view] = state_of()["models"]
    assert view["promotion"] is None
    assert [(r["endpoint"], r["serving_version"], r["state"]) for r in view["status"]["rings"]] == [
        ("churn-ep", "1", "serving"),
        ("churn-north", "0", "serving"),
        ("churn-south", "1", "serving"),
    ]

    w.handle(start_promotion("churn", "2"))
    walk_to(w, "shadow")
    [view] = state_of()["models"]
    shadow = view["status"]["shadow"]
    assert (shadow["deployment"], shadow["mirror_percent"]) == ("churn-v2", 20)
    assert shadow["judged_from"] == (w.clock() + timedelta(minutes=10)).isoformat()
    assert [r["state"] for r in view["status"]["rings"]] == ["shadow", "waiting", "waiting"]
    traffic = view["promotion"]["traffic"]
    assert (traffic[-1]["state"], traffic[-1]["weight"], traffic[-1]["mirror"]) == (
        "shadow",
        0,
        20,
    )

    walk_to(w, "ring", "ring-3")
    [view] = state_of()["models"]
    assert view["status"]["shadow"] is None
    assert [(r["endpoint"], r["serving_version"], r["state"]) for r in view["status"]["rings"]] == [
        ("churn-ep", "2", "done"),
        ("churn-north", "2", "done"),
        ("churn-south", "1", "deploying"),
    ]
    traffic = view["promotion"]["traffic"]
    assert max(p["mirror"] for p in traffic) == 20  # the shadow stays in the series
    assert {p["weight"] for p in traffic if p["state"] == "ring"} == {100}
