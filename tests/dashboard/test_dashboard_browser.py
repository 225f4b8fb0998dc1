"""The dashboard in a real browser (headless Debian chromium, Playwright) on a running devhost:
the page loads behind the function key, follows a first model and a better one as they are
trained and promoted, and a person acts from it with a local-issuer token: a non-approver's
approval is refused and audited, the approver's moves the promotion and shows in the audit,
a pause holds the canary and a resume lets it advance, a rollback puts all traffic back on the
known-good version (read from the endpoint itself). Screenshots: build/dashboard/.

DASHBOARD_README_SCREENSHOT=1 also writes the mid-canary screenshot to docs/images/dashboard.png
(the README's picture)."""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from devhost.demo.story import APPROVER
from domain.naming import deployment_name
from tests.dashboard.conftest import REPO, SCREENSHOTS, DashboardWorld

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRAINING = 240_000  # ms: data landing -> a trained, registered candidate awaiting approval
STEP = 120_000  # ms: one canary step's bake with enough samples on both arms


def shot(page: Page, name: str) -> Any:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    # What the page drew it from, beside the picture (for whoever reads a failure).
    state = page.evaluate("JSON.stringify(window.dashboardState(), null, 1)")
    path.with_suffix(".json").write_text(state)
    return path


def sign_in(page: Page, name: str) -> None:
    if page.locator("#sign-out").is_visible():
        page.click("#sign-out")
    page.fill("#sign-in-name", name)
    page.click("#sign-in-button")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(f"signed in as {name}")


def act(page: Page, card: Locator, action: str, reason: str) -> None:
    """Press the card's button, give the reason, confirm."""
    button = card.locator(f'button[data-action="{action}"]')
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("#action-dialog")).to_be_visible()
    page.fill("#action-reason", reason)
    page.click("#action-confirm")
    expect(page.locator("#action-dialog")).to_be_hidden()


def audit_actor(card: Locator, action: str) -> Locator:
    return card.locator(
        f'[data-testid=audit-row][data-action="{action}"] [data-testid=audit-actor]'
    )


def test_a_person_follows_and_steers_promotions_from_the_dashboard(
    dashboard_world: DashboardWorld, chromium: Any
) -> None:
    w = dashboard_world
    context = chromium.new_context(viewport={"width": 1440, "height": 1100})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    failed: list[tuple[int, str]] = []  # every answer that is not a success, checked at the end
    page.on(
        "response",
        lambda response: (
            failed.append((response.status, response.url.split("?")[0]))
            if response.status >= 400
            else None
        ),
    )

    # Behind the API's authentication: no key, no page (nor its data).
    assert page.request.get(f"{w.host.http_url}/dashboard").status == 401
    assert page.request.get(f"{w.host.http_url}/dashboard/state").status == 401

    page.goto(w.dashboard_url)
    models = page.get_by_test_id("models")
    expect(models).to_contain_text(w.model)
    expect(models.get_by_test_id("production")).to_have_text("none")
    expect(page.get_by_test_id("freshness")).to_contain_text("updated")
    # The key is read, then taken out of the address bar (and the history); polling goes on.
    assert "code=" not in page.url and page.url.endswith("/dashboard")
    shot(page, "01-loaded")

    # --- a first model: trained, then awaiting approval
    w.land("first")
    card = page.locator(f'[data-testid=promotion][data-model="{w.model}"]')
    status = card.get_by_test_id("promotion-status")
    expect(status).to_contain_text("awaiting_approval", timeout=TRAINING)
    expect(card.get_by_test_id("approval")).to_contain_text("awaiting approval until")

    # Someone not among the approvers is refused, and the refusal is in the audit.
    sign_in(page, "intruder@example.com")
    act(page, card, "approve", "let me in")
    expect(page.get_by_test_id("action-result")).to_contain_text("refused (403)")
    expect(page.get_by_test_id("action-result")).to_contain_text("not among")
    expect(audit_actor(card, "message.rejected")).to_have_text("unverified")
    expect(status).to_contain_text("awaiting_approval")

    # The approver's approval moves it, and the audit names the approver from the token.
    sign_in(page, APPROVER)
    act(page, card, "approve", "offline metrics look fine")
    expect(page.get_by_test_id("action-result")).to_contain_text("Approve: applied")
    expect(status).not_to_contain_text("awaiting_approval")
    expect(audit_actor(card, "promotion.deploying")).to_have_text(APPROVER)
    expect(card.get_by_test_id("approval")).to_contain_text(f"approve by {APPROVER}")
    expect(models.get_by_test_id("last-known-good")).to_contain_text("v1", timeout=STEP)
    expect(models.get_by_test_id("production")).to_contain_text("v1")
    shot(page, "02-first-model-in-production")

    # --- a better model: approved from the page, then its canary advances
    w.land("better")
    expect(status).to_contain_text("awaiting_approval", timeout=TRAINING)
    act(page, card, "approve", "better auc")
    weight = card.get_by_test_id("traffic-weight")
    expect(weight).to_contain_text("10%", timeout=STEP)
    expect(status).to_contain_text("canary")

    # A pause holds it at its step; a resume lets it go on.
    act(page, card, "pause", "a look at the logs first")
    expect(models).to_contain_text("paused")
    expect(audit_actor(card, "promotion.paused")).to_have_text(APPROVER)
    expect(card.locator('button[data-action="resume"]')).to_be_enabled()
    act(page, card, "resume", "logs are fine")
    expect(audit_actor(card, "promotion.resumed")).to_have_text(APPROVER)
    expect(weight).to_contain_text("25%", timeout=STEP)
    # Held at 25% while the plots are read, so the rollback below meets a canary.
    act(page, card, "pause", "read the plots before deciding")
    expect(models).to_contain_text("paused")

    # The plots are drawn: traffic over time and each gate's evidence.
    expect(card.get_by_test_id("evidence")).to_contain_text("canary:accuracy")
    expect(card.locator(".chart canvas").first).to_be_visible()
    # Traffic, and at least two canary gates (drawn as their evidence arrives).
    expect(card.locator(".chart").nth(2)).to_be_attached(timeout=STEP)
    evidence_row = card.locator('[data-testid=evidence] tr[data-gate="canary:accuracy"]')
    expect(evidence_row).to_contain_text(re.compile(r"canary: \d+, production: \d+"))  # per arm
    mid_canary = shot(page, "03-mid-canary")
    if os.environ.get("DASHBOARD_README_SCREENSHOT"):
        shutil.copyfile(mid_canary, REPO / "docs" / "images" / "dashboard.png")

    # --- a rollback from the page (of a paused canary) puts all traffic back on v1
    act(page, card, "rollback", "error budget burning")
    expect(page.get_by_test_id("action-result")).to_contain_text("Roll back: applied")
    expect(status).to_contain_text("rolled_back", timeout=STEP)
    expect(audit_actor(card, "promotion.rolled_back")).to_have_text(APPROVER)
    expect(models.get_by_test_id("production")).to_contain_text("v1")
    known_good = deployment_name(w.model, "1")
    deadline = time.monotonic() + 60
    while (served := w.endpoint_traffic()) != {known_good: 100}:
        assert time.monotonic() < deadline, f"endpoint traffic stays {served}"
        time.sleep(0.5)
    shot(page, "04-rolled-back")

    assert problems == [], problems
    # The one refusal the test asked for (the intruder's approval); no asset or read failed.
    assert [status for status, _ in failed] == [403], failed
    assert failed[0][1].endswith("/approval")
    context.close()
