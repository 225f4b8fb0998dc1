"""HTTP triggers: routes, route params, methods, keys, errors, over real HTTP."""

from __future__ import annotations

import json

import azure.functions as func
import httpx
import pytest

from tests.devhost.host.conftest import TEST_KEY, HostFactory

pytestmark = pytest.mark.azurite


def build_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="models/{model}", methods=["GET"])
    def model_status(req: func.HttpRequest) -> func.HttpResponse:
        body = {
            "model": req.route_params["model"],
            "verbose": req.params.get("verbose"),
            "method": req.method,
            "header": req.headers.get("x-custom"),
        }
        return func.HttpResponse(json.dumps(body), mimetype="application/json", status_code=200)

    @app.route(route="promotions/{id}/rollback", methods=["POST"])
    async def rollback(req: func.HttpRequest) -> func.HttpResponse:
        payload = req.get_json()
        return func.HttpResponse(
            f"rolled back {req.route_params['id']}: {payload['reason']}",
            status_code=202,
            headers={"x-promotion": req.route_params["id"]},
        )

    @app.route(route="health", auth_level=func.AuthLevel.ANONYMOUS)
    def health(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    @app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret detail")

    return app


@pytest.fixture
def base(make_host: HostFactory) -> str:
    return make_host(build_app()).http_url


def test_route_params_with_key_in_query(base: str) -> None:
    response = httpx.get(
        f"{base}/models/churn", params={"code": TEST_KEY, "verbose": "1"},
        headers={"x-custom": "yes"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"model": "churn", "verbose": "1", "method": "GET", "header": "yes"}


def test_key_in_header(base: str) -> None:
    response = httpx.get(f"{base}/models/churn", headers={"x-functions-key": TEST_KEY})
    assert response.status_code == 200


def test_key_required(base: str) -> None:
    assert httpx.get(f"{base}/models/churn").status_code == 401
    assert httpx.get(f"{base}/models/churn", params={"code": "wrong"}).status_code == 401


def test_anonymous_route_needs_no_key(base: str) -> None:
    response = httpx.get(f"{base}/health")
    assert (response.status_code, response.text) == (200, "ok")


def test_unknown_route_is_404(base: str) -> None:
    assert httpx.get(f"{base}/nothing/here", params={"code": TEST_KEY}).status_code == 404
    assert httpx.get(f"{base.removesuffix('/api')}/health").status_code == 404


def test_method_filter(base: str) -> None:
    url = f"{base}/promotions/p-7/rollback"
    assert httpx.get(url, params={"code": TEST_KEY}).status_code == 404
    response = httpx.post(url, params={"code": TEST_KEY}, json={"reason": "latency"})
    assert response.status_code == 202
    assert response.text == "rolled back p-7: latency"
    assert response.headers["x-promotion"] == "p-7"


def test_unhandled_exception_is_a_generic_500(base: str) -> None:
    response = httpx.get(f"{base}/boom")
    assert response.status_code == 500
    assert "secret" not in response.text
