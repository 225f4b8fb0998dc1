"""The dashboard in a real browser: Debian's `chromium` driven by Playwright for Python, against
the app running under devhost with the demo's pieces (the local endpoint, the local pipeline
runner, MLflow on SQLite, labelled traffic) on the session's Azurite.

`make test` installs chromium when it is missing and apt can (Makefile, `browser`); where it
truly cannot be had, the browser tests skip and say why. Screenshots go to build/dashboard/.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.azurite import Azurite

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "dashboard"
FUNCTION_KEY = "dashboard-test-key"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_executable() -> str | None:
    """CHROMIUM_PATH, else Debian's chromium on the PATH."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # Per module, not per session: Playwright's sync API keeps an event loop running in the
    # thread until it stops, and a later test in the same worker may need asyncio.run().
    """A headless Chromium (Playwright's own browser download cannot work here)."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            "no chromium on this machine (`make test` installs Debian's chromium when it runs "
            "as root with apt; elsewhere: apt-get install chromium, or set CHROMIUM_PATH)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


# A model with a shadow stage and three rings, each serving its own known-good (on fakes).
RINGS = "[{endpoint: churn-ep}, {endpoint: churn-north, bake: 2s}, {endpoint: churn-south}]"
SHADOW = "{percent: 20, duration: 10m, check_every: 5m, max_wait: 20m, gates: {min_samples: 50}}"


def rings_world() -> Any:
    """A FakeWorld (tests/fakes.py) whose policy has a shadow stage and rings: churn v1 serves
    churn-ep and churn-south, v0 churn-north."""
    from tests.fakes import fake_runtime, policy_yaml

    w = fake_runtime(policy_yaml("churn", rings=RINGS, shadow=SHADOW, production_holdback="0"))
    w.seed_champion("churn", "1")
    w.seed_ring("churn", "churn-north", "0")
    w.seed_ring("churn", "churn-south", "1")
    return w


def walk_to(w: Any, status: str, step: str | None = None) -> None:
    """Deliver the world's messages until churn's active promotion is in `status` (at `step`)."""

    def there() -> bool:
        active = w.aggregate("churn").promotion.active
        return (
            active is not None and active.status == status and (step is None or active.step == step)
        )

    w.run(until=there)
    assert there(), f"churn never reached {status} {step or ''}"


@dataclass
class DashboardWorld:
    host: Any  # devhost.host.dev_host.DevHost
    runtime: Any
    model: str
    endpoint_url: str
    endpoint_name: str
    endpoint_key: str
    batches: dict[str, list[Path]]

    @property
    def dashboard_url(self) -> str:
        return f"{self.host.http_url}/dashboard?code={FUNCTION_KEY}"

    def endpoint_traffic(self) -> dict[str, int]:
        from adapters.local_endpoint import LocalEndpoint

        with LocalEndpoint(self.endpoint_url, self.endpoint_name, key=self.endpoint_key) as client:
            return client.traffic()

    def land(self, batch: str) -> None:
        from devhost.cli.commands import send_data

        send_data(self.runtime, self.model, self.batches[batch])


@pytest.fixture
def dashboard_world(azurite: Azurite, tmp_path: Path) -> Iterator[DashboardWorld]:
    """The demo's model under devhost: its policy (short timings, approval by
    demo-lead@example.com), data batches for a first model and a better one, traffic flowing.
    Containers and queues are this test's own."""
    from devhost.demo.inputs import TrafficGenerator, load_dataset, write_batch
    from devhost.demo.story import APPROVER, MODEL, DemoOptions, demo_endpoints, demo_settings
    from devhost.host.dev_host import DevHost
    from endpoint_server import start_local_endpoint
    from endpoint_server.server import new_key
    from orchestrator.bootstrap import get_runtime, set_runtime

    suffix = uuid.uuid4().hex[:10]
    data_container = f"dash-data-{suffix}"
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    demo_policy = (DemoOptions().policy_dir / f"{MODEL}.yml").read_text()
    assert "container: training-data" in demo_policy and APPROVER in demo_policy
    assert "\n  bake: 6s\n" in demo_policy
    (policy_dir / f"{MODEL}.yml").write_text(
        demo_policy.replace("container: training-data", f"container: {data_container}")
        # A canary step long enough for a person to act on it before it moves on.
        .replace("\n  bake: 6s\n", "\n  bake: 30s\n")
    )
    options = DemoOptions(output_dir=tmp_path, policy_dir=policy_dir, mlflow_ui=False)
    local = tmp_path / "local"
    (local / "endpoint").mkdir(parents=True)
    tracking_uri = f"sqlite:///{(local / 'mlflow.db').resolve()}"
    dataset = load_dataset()
    data = tmp_path / "data"
    batches = {
        "first": [write_batch(dataset, data, "batch-a-1", 0, 120)],
        "better": [write_batch(dataset, data, "batch-b", 120, 420)],
    }
    key = new_key()
    endpoint = start_local_endpoint(
        local / "endpoint", tracking_uri, subprocess_mode=True, max_lifetime=1200, key=key
    )
    settings = demo_settings(options, endpoint.url, key) | {
        "AzureWebJobsStorage": azurite.connection_string,
        "DataStorage": azurite.connection_string,
        "DATA_CONTAINER": data_container,
        "STATE_CONTAINER": f"dash-state-{suffix}",
        "ORCHESTRATOR_QUEUE": f"dash-orch-{suffix}",
        "APPROVALS_QUEUE": f"dash-appr-{suffix}",
        "LIFECYCLE_EVENTS_HUB": f"dash-life-{suffix}",
        "DATA_EVENTS_HUB": f"dash-data-{suffix}",
    }
    host = DevHost(
        "function_app",
        settings,
        port=0,
        function_key=FUNCTION_KEY,
        azurite=False,
        retry_delay_scale=0,
        max_deliveries=5,
        poll_interval=0.3,
        state_dir=local,
    )
    endpoints = demo_endpoints(options)
    traffic = TrafficGenerator(endpoint.url, endpoints, dataset, 3, key)
    set_runtime(None)
    try:
        host.start()
        traffic.start()
        yield DashboardWorld(
            host=host,
            runtime=get_runtime(),
            model=MODEL,
            endpoint_url=endpoint.url,
            endpoint_name=endpoints[0],
            endpoint_key=key,
            batches=batches,
        )
    finally:
        traffic.stop()
        host.stop()
        endpoint.stop()
        set_runtime(None)
