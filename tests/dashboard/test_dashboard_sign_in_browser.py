"""The dashboard's sign-in in Azure (App Service authentication), in a real browser (headless
Debian chromium, Playwright) against a small HTTP server on this machine standing in for the
Function App behind App Service: the host's function key on /api/*, the page and its assets
from the app's own routes (triggers/dashboard.py), the state document the app's route made for
a canary walked on fakes with Entra ID settings (`sign_in.mode` app-service), App Service
authentication's /.auth/me, /.auth/refresh and /.auth/login/aad over a token store holding one
person, and a person's command route that accepts only the tokens the app would.

What is checked: a token /.auth/me reports expired is renewed (/.auth/refresh, /.auth/me again)
before it is sent; a command refused 401 is renewed once and sent once more; a token that
cannot be renewed is not sent again; the sign-in window comes back to the dashboard's address
without the function key, and the page, which kept its key, shows the person signed in."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest
from playwright.sync_api import Page, expect

from orchestrator.bootstrap import set_runtime
from tests.dashboard.conftest import walk_to
from tests.fakes import fake_runtime, fake_settings, start_promotion
from triggers import dashboard

KEY = "sign-in-test-key"
PERSON = "lead@example.com"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def expires_on(after: timedelta) -> str:
    """An expiry as App Service's /.auth/me writes it (seven decimals)."""
    return (datetime.now(UTC) + after).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def session(token: str, after: timedelta) -> dict[str, Any]:
    """One /.auth/me entry: the person's access token for the API from the token store."""
    return {
        "provider_name": "aad",
        "user_id": PERSON,
        "access_token": token,
        "expires_on": expires_on(after),
        "user_claims": [{"typ": "preferred_username", "val": PERSON}],
    }


@pytest.fixture(scope="module")
def state_document() -> dict[str, Any]:
    """The app's state document for churn's canary, with Entra ID settings (the page signs in
    through App Service authentication)."""
    settings = fake_settings(
        ENTRA_TENANT_ID=TENANT, ENTRA_API_AUDIENCE="api://retrain-orchestrator"
    )
    w = fake_runtime(settings=settings)
    w.seed_champion("churn", "1")
    with pytest.MonkeyPatch.context() as patch:
        # The fakes have no blob service to list dead letters from (not this test's subject).
        patch.setattr(dashboard, "recent_dead_letters", lambda runtime, limit: [])
        set_runtime(w.runtime)
        try:
            w.handle(start_promotion("churn", "2"))
            walk_to(w, "canary")
            request = func.HttpRequest("GET", "http://app.test/api/dashboard/state", body=b"")
            response = dashboard.dashboard_state._function.get_user_function()(request)
        finally:
            set_runtime(None)
    assert response.status_code == 200
    document = json.loads(response.get_body())
    assert document["sign_in"]["mode"] == "app-service"
    return document


@dataclass
class Stub:
    """What the page meets in Azure, as far as it can tell."""

    state: dict[str, Any]
    url: str = ""
    store: dict[str, Any] | None = None  # the token store's session (None: not signed in)
    renewed: dict[str, Any] | None = None  # what /.auth/refresh makes it (None: it cannot)
    at_sign_in: dict[str, Any] | None = None  # what /.auth/login/aad makes it
    accepted: set[str] = field(default_factory=set)  # tokens the app verifies
    # Each request: method, path and query, bearer token, status answered.
    log: list[tuple[str, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self) -> list[tuple[str, str, str, int]]:
        """The page's requests to App Service authentication and to the command routes."""
        with self.lock:
            return [
                call
                for call in self.log
                if call[1].startswith("/.auth/") or call[1].startswith("/api/promotions/")
            ]

    def answer(self, method: str, target: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        path = url.path
        if path == "/.auth/me":
            if self.store is None:
                return 401, {}, b""
            return 200, {"Content-Type": "application/json"}, json.dumps([self.store]).encode()
        if path == "/.auth/refresh":
            if self.store is None or self.renewed is None:
                return 401, {}, b""
            self.store, self.renewed = self.renewed, None
            return 200, {}, b""
        if path == "/.auth/login/aad":
            back = query.get("post_login_redirect_uri", "")
            if not back.startswith("/") or back.startswith("//"):
                return 400, {}, b"post_login_redirect_uri must be a path on this site"
            self.store = self.at_sign_in
            return 302, {"Location": back}, b""
        if not path.startswith("/api/"):
            return 404, {}, b""
        # The Functions host: every route here takes the function key.
        if KEY not in (query.get("code"), headers.get("x-functions-key")):
            return 401, {}, b""
        if path == "/api/dashboard/state":
            return 200, {"Content-Type": "application/json"}, json.dumps(self.state).encode()
        if method == "POST" and path.startswith("/api/promotions/"):
            bearer = headers.get("Authorization", "").removeprefix("Bearer ")
            if bearer in self.accepted:
                return 202, {"Content-Type": "application/json"}, b'{"status": "accepted"}'
            problem = {"title": "Unauthorized", "detail": "the token has expired"}
            return 401, {"Content-Type": "application/problem+json"}, json.dumps(problem).encode()
        if path == "/api/dashboard":
            handler, route_params = dashboard.dashboard_page, {}
        elif path.startswith("/api/dashboard/assets/"):
            handler, route_params = dashboard.dashboard_asset, {"name": path.rsplit("/", 1)[1]}
        else:
            return 404, {}, b""
        request = func.HttpRequest(
            "GET", self.url + target, params=query, route_params=route_params, body=b""
        )
        response = handler._function.get_user_function()(request)
        answered = dict(response.headers)
        answered["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
        return response.status_code, answered, response.get_body()


@pytest.fixture
def stub(state_document: dict[str, Any]) -> Iterator[Stub]:
    found = Stub(state=state_document)

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with found.lock:
                status, headers, body = found.answer(method, self.path, self.headers)
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                found.log.append((method, self.path, bearer, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.handle_one("GET")

        def do_POST(self) -> None:
            self.handle_one("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def page(chromium: Any, stub: Stub) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(message.text)
            # A 401 of /.auth/me or of a refused command is what these tests are about.
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield opened
        assert problems == []
    finally:
        context.close()


def pause(page: Page) -> None:
    """Press churn's Pause and confirm (no reason needed)."""
    button = page.locator('[data-testid=promotion][data-model="churn"] button[data-action="pause"]')
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("#action-dialog")).to_be_visible()
    page.click("#action-confirm")
    expect(page.locator("#action-dialog")).to_be_hidden()


def eventually(read: Callable[[], Any], wanted: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while (seen := read()) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen == wanted


def command_path(stub: Stub) -> str:
    promotion = stub.state["models"][0]["promotion"]["id"]
    return f"/api/promotions/{promotion}/pause"


def test_a_command_refused_401_is_sent_again_once_with_a_renewed_token(
    stub: Stub, page: Page
) -> None:
    stub.store = session("token-1", timedelta(hours=1))
    stub.renewed = session("token-2", timedelta(hours=1))
    stub.accepted = {"token-2"}  # the app no longer takes token-1 (revoked, clock skew)
    page.goto(f"{stub.url}/api/dashboard?code={KEY}")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(f"signed in as {PERSON}")
    pause(page)
    expect(page.get_by_test_id("action-result")).to_have_text(
        f"Pause: accepted (promotion {stub.state['models'][0]['promotion']['id']})"
    )
    command = command_path(stub)
    eventually(
        stub.calls,
        [
            ("GET", "/.auth/me", "", 200),
            ("POST", command, "token-1", 401),
            ("GET", "/.auth/refresh", "", 200),
            ("GET", "/.auth/me", "", 200),
            ("POST", command, "token-2", 202),
        ],
    )


def test_an_expired_token_is_renewed_before_it_is_sent(stub: Stub, page: Page) -> None:
    stub.store = session("token-1", -timedelta(minutes=5))
    stub.renewed = session("token-2", timedelta(hours=1))
    stub.accepted = {"token-2"}
    page.goto(f"{stub.url}/api/dashboard?code={KEY}")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(f"signed in as {PERSON}")
    pause(page)
    expect(page.get_by_test_id("action-result")).to_contain_text("Pause: accepted")
    eventually(
        stub.calls,
        [
            ("GET", "/.auth/me", "", 200),
            ("GET", "/.auth/refresh", "", 200),
            ("GET", "/.auth/me", "", 200),
            ("POST", command_path(stub), "token-2", 202),
        ],
    )


def test_a_token_that_cannot_be_renewed_is_not_sent_again(stub: Stub, page: Page) -> None:
    stub.store = session("token-1", timedelta(hours=1))
    stub.renewed = None  # no refresh token (or it expired): sign in again
    page.goto(f"{stub.url}/api/dashboard?code={KEY}")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(f"signed in as {PERSON}")
    pause(page)
    expect(page.get_by_test_id("action-result")).to_have_text(
        "Pause refused (401): the token has expired"
    )
    expect(page.get_by_test_id("signed-in-as")).to_have_text("not signed in")
    expect(page.get_by_test_id("app-service-sign-in")).to_be_visible()
    eventually(
        stub.calls,
        [
            ("GET", "/.auth/me", "", 200),
            ("POST", command_path(stub), "token-1", 401),
            ("GET", "/.auth/refresh", "", 401),
        ],
    )


def test_the_sign_in_window_comes_back_to_the_dashboard_without_the_key(
    stub: Stub, page: Page
) -> None:
    stub.at_sign_in = session("token-1", timedelta(hours=1))
    stub.accepted = {"token-1"}
    page.goto(f"{stub.url}/api/dashboard?code={KEY}&view=all")
    link = page.get_by_test_id("app-service-sign-in")
    expect(link).to_be_visible()
    expect(page.get_by_test_id("signed-in-as")).to_have_text("not signed in")
    with page.context.expect_page() as opened:
        link.click()
    window = opened.value
    # The page itself stays, its key with it; the window signs in and is closed.
    expect(page.get_by_test_id("signed-in-as")).to_have_text(f"signed in as {PERSON}")
    eventually(window.is_closed, True)
    assert page.url == f"{stub.url}/api/dashboard?view=all"
    sign_ins = [call for call in stub.calls() if call[1].startswith("/.auth/login/")]
    assert sign_ins == [
        ("GET", "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fdashboard%3Fview%3Dall", "", 302)
    ]
    assert not [call for call in stub.log if call[1].startswith("/.auth/") and KEY in call[1]]
    # Acting works with the token the window left in the store.
    pause(page)
    expect(page.get_by_test_id("action-result")).to_contain_text("Pause: accepted")
