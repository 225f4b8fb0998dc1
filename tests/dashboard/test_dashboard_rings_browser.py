"""The dashboard draws a shadow stage and each ring, in a real browser (headless Debian chromium,
Playwright) without a devhost: Playwright answers the page's requests itself, the page and its
assets from the app's own routes (triggers/dashboard.py), and GET /api/dashboard/state from
the state documents the route produced for a promotion walked on fakes, first in its shadow
stage, then on its third ring. Screenshots: build/dashboard/rings-*.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest
from playwright.sync_api import Page, Route, expect

from orchestrator.bootstrap import set_runtime
from tests.dashboard.conftest import SCREENSHOTS, rings_world, walk_to
from tests.fakes import start_promotion
from triggers import dashboard

ORIGIN = "http://dashboard.test"
KEY = "rings-test-key"


def state_document() -> dict[str, Any]:
    request = func.HttpRequest("GET", f"{ORIGIN}/api/dashboard/state", body=b"")
    response = dashboard.dashboard_state._function.get_user_function()(request)
    assert response.status_code == 200
    return json.loads(response.get_body())


@pytest.fixture
def documents(monkeypatch) -> Iterator[dict[str, dict[str, Any]]]:
    """The state documents of churn's promotion in its shadow and on ring-3 (of three)."""
    w = rings_world()
    # The fakes have no blob service to list dead letters from (not this test's subject).
    monkeypatch.setattr(dashboard, "recent_dead_letters", lambda runtime, limit: [])
    set_runtime(w.runtime)
    try:
        w.handle(start_promotion("churn", "2"))
        walk_to(w, "shadow")
        in_shadow = state_document()
        walk_to(w, "ring", "ring-3")
        yield {"shadow": in_shadow, "ring-3": state_document()}
    finally:
        set_runtime(None)


def serve(page: Page, state: dict[str, Any]) -> None:
    """Answer the page's requests: the page and its assets by the app's routes, the state
    from `state["document"]` (swapped by the test), anything else 404."""

    def answer(route: Route) -> None:
        url = urlsplit(route.request.url)
        params = dict(parse_qsl(url.query))
        path = url.path
        if path == "/api/dashboard/state":
            route.fulfill(
                status=200, content_type="application/json", body=json.dumps(state["document"])
            )
            return
        if path == "/api/dashboard":
            handler, route_params = dashboard.dashboard_page, {}
        elif path.startswith("/api/dashboard/assets/"):
            name = path.rsplit("/", 1)[1]
            handler, route_params = dashboard.dashboard_asset, {"name": name}
        else:
            route.fulfill(status=404, body="")
            return
        request = func.HttpRequest(
            "GET", route.request.url, params=params, route_params=route_params, body=b""
        )
        response = handler._function.get_user_function()(request)
        headers = dict(response.headers)
        headers["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
        route.fulfill(status=response.status_code, headers=headers, body=response.get_body())

    page.route(f"{ORIGIN}/**", answer)


def test_the_page_shows_the_shadow_stage_then_each_ring(documents, chromium: Any) -> None:
    context = chromium.new_context(viewport={"width": 1440, "height": 1100})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    state = {"document": documents["shadow"]}
    serve(page, state)
    try:
        page.goto(f"{ORIGIN}/api/dashboard?code={KEY}")
        card = page.locator('[data-testid=promotion][data-model="churn"]')

        # In the shadow: mirrored, not live; when it is judged; every ring still waiting.
        expect(card.get_by_test_id("promotion-status")).to_contain_text("shadow")
        expect(card.get_by_test_id("traffic-weight")).to_have_text(
            "on the candidate0% live, 20% mirrored"
        )
        expect(card.get_by_test_id("shadow-mirror")).to_contain_text("20% of live requests")
        judged_from = documents["shadow"]["models"][0]["status"]["shadow"]["judged_from"]
        shown = page.evaluate(
            "iso => new Date(iso).toLocaleString(undefined, { hour12: false })", judged_from
        )
        expect(card.get_by_test_id("shadow-judged-from")).to_contain_text(shown)
        rows = card.locator("[data-testid=rings] [data-testid=ring-row]")
        expect(rows).to_have_count(3)
        expect(rows.get_by_test_id("ring-state")).to_have_text(["shadow", "waiting", "waiting"])
        chart = card.locator(".chart").first
        expect(chart.locator("h4")).to_have_text("traffic on the candidate on churn-ep (%)")
        expect(chart).to_contain_text("mirrored %")
        expect(page.get_by_test_id("models")).to_contain_text("v2 shadow shadow (0% live, 20%")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "rings-1-shadow.png"), full_page=True)

        # On the third ring: the first two serve the candidate, the third is being deployed.
        state["document"] = documents["ring-3"]
        expect(card.get_by_test_id("promotion-status")).to_contain_text("ring")
        expect(card.get_by_test_id("shadow")).to_have_count(0)
        expect(card.get_by_test_id("traffic-weight")).to_have_text("on the candidate100%")
        expect(rows.locator("td:nth-child(2)")).to_have_text(
            ["churn-ep", "churn-north", "churn-south"]
        )
        expect(rows.get_by_test_id("ring-version")).to_have_text(["v2", "v2", "v1"])
        expect(rows.get_by_test_id("ring-state")).to_have_text(["done", "done", "deploying"])
        page.screenshot(path=str(SCREENSHOTS / "rings-2-ring-3.png"), full_page=True)
        assert problems == []
    finally:
        context.close()
