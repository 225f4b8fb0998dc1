"""The local endpoint's key, over real HTTP: every route but /health needs it (the control
plane: endpoints, deployments, traffic, mirror, feedback, records flush; and scoring, as on a
managed endpoint's scoring URI), checked before anything else (an unknown endpoint too). No
key or another key: 401, nothing changes. The server generates a
key into its key file (0600) when it is given none; the adapter and the app send it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.local_endpoint import KEY_FILE, LocalEndpoint
from domain.policy import parse_policy
from endpoint_server import start_local_endpoint
from endpoint_server.server import KEY_ENVIRONMENT
from orchestrator.bootstrap import bootstrap
from orchestrator.ports import EndpointError
from tests.fakes import fake_settings
from tests.harness import policy_yaml

KEY = "k3y-for-the-control-plane-0123456789"
ROOT = Path(__file__).resolve().parents[2]

EP = "/churn-ep"  # the endpoint the routes below address
# Every keyed route: (method, path, JSON body).
ROUTES = [
    ("GET", "/endpoints", None),
    ("PUT", EP, None),
    ("GET", EP, None),
    ("GET", f"{EP}/deployments", None),
    ("PUT", f"{EP}/deployments/churn-v1", {"model_name": "churn", "model_version": "1"}),
    ("GET", f"{EP}/deployments/churn-v1", None),
    ("DELETE", f"{EP}/deployments/churn-v9", None),
    ("GET", f"{EP}/traffic", None),
    ("PUT", f"{EP}/traffic", {"traffic": {}}),
    ("PUT", f"{EP}/mirror", {"mirror_traffic": {}}),
    ("POST", f"{EP}/score", {"input_data": {"columns": ["a"], "data": [[1]]}}),
    ("POST", f"{EP}/feedback", {"request_id": "r1", "label": 1}),
    ("POST", f"{EP}/records/flush", None),
]
ROUTE = {f"{method} {path}": (method, path, body) for method, path, body in ROUTES}
WRONG: dict[str, dict[str, str | bytes]] = {
    "no key": {},
    "another key": {"Authorization": f"Bearer {KEY}x"},
    "a prefix of the key": {"Authorization": f"Bearer {KEY[:-1]}"},
    "empty bearer": {"Authorization": "Bearer"},
    "basic, not bearer": {"Authorization": f"Basic {KEY}"},
    "the key as the scheme": {"Authorization": KEY},
    "another x-endpoint-key": {"x-endpoint-key": "not-the-key-0123456789"},
    "non-ASCII": {"x-endpoint-key": "kéy-for-the-control-plane".encode()},
}


@pytest.fixture(scope="module")
def endpoint_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server with KEY; its MLflow store is empty (no model loads: not needed here)."""
    root = tmp_path_factory.mktemp("keyed")
    with start_local_endpoint(
        root / "endpoint", f"sqlite:///{root / 'mlflow.db'}", key=KEY, max_lifetime=300
    ) as handle:
        assert handle.key == KEY and KEY not in repr(handle)
        yield handle.url


def send(
    url: str, method: str, path: str, body: object, headers: dict[str, str | bytes]
) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("wrong", WRONG.values(), ids=WRONG.keys())
@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_without_the_key_every_route_answers_401_and_changes_nothing(
    endpoint_url: str, method: str, path: str, body: object, wrong: dict[str, str | bytes]
) -> None:
    response = send(endpoint_url, method, path, body, wrong)
    assert response.status_code == 401, response.text
    assert response.json() == {"error": "missing or wrong endpoint key"}
    assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing was created by a refused request: the only endpoint and deployment are the
    # ones the keyed test below makes.
    endpoints = send(endpoint_url, "GET", "/endpoints", None, {"x-endpoint-key": KEY}).json()
    assert [e["name"] for e in endpoints] in ([], ["churn-ep"])
    assert all(e["deployments"] in ([], ["churn-v1"]) for e in endpoints)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},
        {"x-endpoint-key": KEY},
    ],
    ids=["bearer", "bearer, any case", "x-endpoint-key"],
)
def test_with_the_key_the_control_plane_works(
    endpoint_url: str, headers: dict[str, str | bytes]
) -> None:
    def call(route: str) -> httpx.Response:
        return send(endpoint_url, *ROUTE[route], headers)

    created = call(f"PUT {EP}/deployments/churn-v1")
    assert created.status_code in (200, 201), created.text
    assert call(f"PUT {EP}").status_code == 200  # it came into being with its deployment
    assert call(f"GET {EP}").json()["deployments"] == ["churn-v1"]
    assert call(f"GET {EP}/deployments/churn-v1").status_code == 200
    assert call(f"GET {EP}/traffic").json() == {"traffic": {}, "mirror_traffic": {}}
    assert call(f"DELETE {EP}/deployments/churn-v9").status_code == 404
    assert call(f"POST {EP}/feedback").status_code == 202
    assert call(f"POST {EP}/records/flush").status_code == 200
    # Scoring gets past the key: nothing takes traffic yet, so 503 (not 401).
    assert call(f"POST {EP}/score").status_code == 503


def test_health_stays_open(endpoint_url: str) -> None:
    assert send(endpoint_url, "GET", "/health", None, {}).json() == {"status": "ok"}


def test_the_adapter_sends_the_key_and_without_it_fails_saying_so(endpoint_url: str) -> None:
    with LocalEndpoint(endpoint_url, "churn-ep", key=KEY) as endpoint:
        assert endpoint.traffic() == {}
    with (
        LocalEndpoint(endpoint_url, "churn-ep") as endpoint,
        pytest.raises(EndpointError) as refused,
    ):
        endpoint.traffic()
    assert "401" in str(refused.value) and "LOCAL_ENDPOINT_KEY" in str(refused.value)
    assert not refused.value.transient


def test_the_app_sends_the_key_from_its_settings_or_the_servers_key_file(
    endpoint_url: str, tmp_path: Path
) -> None:
    policy = parse_policy(policy_yaml("churn"))
    given = bootstrap(
        fake_settings(
            LOCAL_ENDPOINT_URL=endpoint_url, LOCAL_ENDPOINT_KEY=KEY, RETRAIN_LOCAL_DIR=str(tmp_path)
        )
    )
    assert given.endpoint_for(policy).traffic() == {}
    unset = fake_settings(LOCAL_ENDPOINT_URL=endpoint_url, RETRAIN_LOCAL_DIR=str(tmp_path))
    with pytest.raises(EndpointError, match="401"):
        bootstrap(unset).endpoint_for(policy).traffic()
    (tmp_path / KEY_FILE).write_text(KEY + "\n")  # as `python -m endpoint_server` writes it
    assert bootstrap(unset).endpoint_for(policy).traffic() == {}


def _serve(tmp_path: Path, *arguments: str, environment: dict[str, str]) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "endpoint_server",
        "--data-dir", str(tmp_path / "endpoint"),
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--max-lifetime", "120",
        "--parent-pid", str(os.getpid()),
        *arguments,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != KEY_ENVIRONMENT} | environment
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on "), (line, process.poll())
    return line.split("listening on ", 1)[1].strip()


def test_the_server_generates_its_key_file_owner_only_and_reuses_it(tmp_path: Path) -> None:
    local = tmp_path / "local"
    for attempt in range(2):  # the second start reads the key the first one wrote
        process = _serve(tmp_path, environment={"RETRAIN_LOCAL_DIR": str(local)})
        try:
            url = _url(process)
            key_file = local / KEY_FILE
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            key = key_file.read_text().strip()
            assert len(key) >= 32
            if attempt == 0:
                first = key
            assert key == first
            assert send(url, "GET", "/endpoints", None, {}).status_code == 401
            assert send(url, "GET", "/endpoints", None, {"x-endpoint-key": key}).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=15)


def test_the_server_takes_its_key_from_the_environment_or_the_command_line(
    tmp_path: Path,
) -> None:
    for arguments, environment in (((), {KEY_ENVIRONMENT: KEY}), (("--key", KEY), {})):
        process = _serve(
            tmp_path, *arguments, environment=environment | {"RETRAIN_LOCAL_DIR": str(tmp_path)}
        )
        try:
            url = _url(process)
            assert send(url, "GET", "/endpoints", None, {"x-endpoint-key": KEY}).status_code == 200
            assert not (tmp_path / KEY_FILE).exists()  # a given key is not written anywhere
        finally:
            process.terminate()
            process.wait(timeout=15)
    short = _serve(tmp_path, "--key", "short", environment={})
    assert short.wait(timeout=60) == 2
    assert short.stderr is not None and "at least 16 characters" in short.stderr.read()
