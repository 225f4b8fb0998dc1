"""The README's "Your first model", followed as a new user would, on a machine where other
servers already hold the usual ports (Azurite's 10000-10002, the MLflow UI's 5000, 5080,
Functions' 7071): a second dataset (scikit-learn's wine data) goes into production beside the
demo's model, without reading the source or copying anything out of a log.

The commands, the policy and where it goes are read from README.md itself (so the test breaks
when the README drifts from what works), and run in a checkout of their own: the code linked
from this one, its own policies (the demo's breast-cancer and the README's wine), settings
made by `make devhost`'s own recipe from the sample, and `.local/` state. devhost runs for real
(`python -m devhost` as a subprocess: its own Azurite, the local endpoint, the MLflow UI, the
local pipeline runner); the CLI finds all of it in `.local/devhost.json`. Done when `status`
says v1 is in production, completed, and the endpoint serves it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from devhost.host.state_file import RUNNING, DevhostState, read_state, state_path
from domain.naming import deployment_name

pytestmark = [pytest.mark.azurite, pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
USUAL_PORTS = (10000, 10001, 10002, 5000, 5080, 7071)
MODEL = "wine"
PYTHON = ".venv/bin/python"  # as the README and the Makefile run it, in the checkout
# The checkout's own files decide these: nothing of the test process's may leak in.
_SAMPLE = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())
_CLEARED = {*_SAMPLE["Values"], *_SAMPLE["AzureValues"], *_SAMPLE["OptionalValues"]}
_CLEARED |= {"LOCAL_ENDPOINT_URL", "LOCAL_ENDPOINT_KEY", "MLFLOW_UI_URL", "DEVHOST_FUNCTION_KEY"}


def environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in _CLEARED and not name.startswith(("AzureWebJobsStorage", "DataStorage"))
    }


# --------------------------------------------------------------------------- the README


@dataclass(frozen=True)
class Block:
    language: str
    body: str
    before: str  # the prose between the previous block and this one


def readme_blocks() -> list[Block]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Your first model\n")
    section = text[start : text.index("\n## ", start + 1)]
    blocks, last = [], 0
    for match in re.finditer(r"```(\w+)\n(.*?)```", section, re.S):
        blocks.append(Block(match[1], match[2], section[last : match.start()]))
        last = match.end()
    return blocks


PROMOTION_ID = "<promotion id>"  # what the README asks the reader to fill in


def commands(block: Block) -> list[list[str]]:
    """A bash block's commands, one a line, without their comments; `<promotion id>` kept as
    one word, for the test to fill in."""
    assert block.language == "bash", block
    lines = [line.replace(PROMOTION_ID, "PROMOTION_ID") for line in block.body.splitlines()]
    return [
        [PROMOTION_ID if word == "PROMOTION_ID" else word for word in shlex.split(line, True)]
        for line in lines
        if line.strip()
    ]


def make_devhost_recipe() -> list[str]:
    """What `make devhost` runs, from the Makefile ($(PY) is the checkout's .venv python)."""
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    at = lines.index("devhost: install")
    recipe = []
    for line in lines[at + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:].lstrip("@").replace("$(PY)", PYTHON))
    return recipe


# --------------------------------------------------------------------------- the machine


@pytest.fixture
def usual_ports_taken() -> Iterator[list[int]]:
    """Plain TCP listeners on the usual ports, as other projects' servers would be: they
    accept a connection and never answer. A port already in use stays as it is."""
    held: list[socket.socket] = []
    for port in USUAL_PORTS:
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            listener.close()
            continue  # somebody else's already: taken all the same
        listener.listen(16)
        held.append(listener)
    yield [listener.getsockname()[1] for listener in held]
    for listener in held:
        listener.close()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout of its own: this one's code and .venv linked, its own policies (the demo's
    model's; the README's goes in by the test) and nothing else of this one's state."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    linked = [p for p in REPO_ROOT.iterdir() if p.is_dir() and any(p.glob("*.py"))]  # packages
    linked += [REPO_ROOT / name for name in ("function_app.py", "host.json", ".venv")]
    linked += [REPO_ROOT / "local.settings.sample.json"]
    for path in linked:
        (folder / path.name).symlink_to(path)
    (folder / "policies").mkdir()
    demo = (REPO_ROOT / "policies" / "breast-cancer.yml").read_text()
    (folder / "policies" / "breast-cancer.yml").write_text(demo)
    return folder


@dataclass
class Devhost:
    process: subprocess.Popen[bytes]
    log: Path
    state: DevhostState | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def devhost(checkout: Path) -> Iterator[Callable[[], Devhost]]:
    """`make devhost` in the checkout, by its recipe; stopped (SIGTERM, as Ctrl-C) after."""
    started: list[Devhost] = []

    def start() -> Devhost:
        *before, run = make_devhost_recipe()
        for line in before:
            subprocess.run(["bash", "-ec", line], cwd=checkout, env=environment(), check=True)
        argv = shlex.split(run)
        assert argv[:3] == [PYTHON, "-m", "devhost"], run
        log = checkout.parent / "devhost.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                argv, cwd=checkout, env=environment(), stdout=output, stderr=subprocess.STDOUT
            )
        host = Devhost(process, log)
        started.append(host)
        return host

    yield start
    for host in started:
        if host.process.poll() is None:
            host.process.send_signal(signal.SIGTERM)
            try:
                host.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                host.process.kill()
                host.process.wait(timeout=30)


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, host: Devhost, every: float = 2.0
) -> Any:
    """`check()` until it gives something, every `every` s (each `status` is a CLI process:
    on two cores, polling faster would slow down what it waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise AssertionError(f"devhost exited ({host.process.returncode}): {host.output()}")
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{host.output()[-6000:]}")


# --------------------------------------------------------------------------- the test


def test_a_new_user_puts_a_second_dataset_into_production_by_following_the_readme(
    usual_ports_taken: list[int], checkout: Path, devhost: Callable[[], Devhost]
) -> None:
    began = time.monotonic()
    setup, policy, first_steps, traffic_steps = readme_blocks()[:4]
    env = environment()

    def run(argv: list[str], *more: str) -> subprocess.CompletedProcess[str]:
        assert argv[0] == PYTHON, argv
        return subprocess.run(
            [*argv, *more], cwd=checkout, env=env, capture_output=True, text=True, timeout=180
        )

    def cli(argv: list[str], *more: str) -> str:
        done = run(argv, *more)
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}\n{done.stdout}"
        return done.stdout

    # 1. The data: the README's commands (`make install` is this checkout's, done).
    assert setup.body.startswith("make install")
    script = setup.body.split("\n", 1)[1]
    subprocess.run(["bash", "-ec", script], cwd=checkout, env=env, check=True, timeout=180)
    rows = (checkout / "data" / "wine.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "cultivar" and len(rows) == 179

    # 2. The policy, where the README says to write it.
    assert policy.language == "yaml"
    [where] = re.findall(r"Write `([^`]+)`", policy.before)
    (checkout / where).write_text(policy.body)

    # 3. `make devhost`, with every usual port already taken by something else.
    assert "`make devhost`" in first_steps.before
    host = devhost()
    local = checkout / ".local"

    def recorded() -> DevhostState | None:
        state = read_state(state_path(local))
        ok = state is not None and state.status == RUNNING and state.pid == host.process.pid
        return state if ok else None

    state = wait_for("devhost serving, recorded in .local/devhost.json", recorded, 150, host, 0.5)
    host.state = state
    assert state.azurite and state.endpoint and state.app_url and state.mlflow_ui_url
    used = {
        urlsplit(url).port
        for url in (state.app_url, state.endpoint.url, state.mlflow_ui_url,
                    state.azurite.blob_endpoint, state.azurite.queue_endpoint,
                    state.azurite.table_endpoint)
    }  # fmt: skip
    assert not used & set(USUAL_PORTS), used  # nothing collides, nothing else's is reused
    started_at = time.monotonic()

    # 4. The data goes in; training; the promotion waits for the approver.
    send, status, approve = commands(first_steps)
    assert send[3:5] == ["send-data", MODEL] and status[3:] == ["status", MODEL]
    cli(send)

    def report() -> dict[str, Any]:
        return json.loads(cli(status, "--json"))  # type: ignore[no-any-return]

    def awaiting() -> dict[str, Any] | None:
        now = report()
        failed = [run for run in now["retrain"]["runs"] if run["status"] != "completed"]
        assert not failed and not now["recent_promotions"], now
        active = now["active_promotion"]
        return active if active and active["status"] == "awaiting_approval" else None

    promotion = wait_for("trained, awaiting approval", awaiting, 300, host, every=5.0)
    trained_at = time.monotonic()
    assert promotion["candidate_version"] == "1"
    assert approve[3] == "approve" and PROMOTION_ID in approve
    cli([promotion["id"] if word == PROMOTION_ID else word for word in approve])

    # 5. Deployed, all of wine-ep's traffic on it, baking: the README's traffic and feedback.
    served = deployment_name(MODEL, "1")
    headers = {"Authorization": f"Bearer {state.endpoint.key}"}

    def serving() -> bool:
        now = report()["active_promotion"]
        if not now or now["status"] != "production_bake":
            return False
        answer = httpx.get(f"{state.endpoint.url}/wine-ep/traffic", headers=headers)
        return answer.status_code == 200 and answer.json()["traffic"] == {served: 100}

    wait_for("deployed and baking with all of wine-ep's traffic", serving, 180, host)
    score, final_status = commands(traffic_steps)
    assert score[3:5] == ["score", MODEL]
    sent = cli(score)
    assert "178 answered" in sent and f"{served} 178" in sent
    assert "178 label(s) accepted" in sent

    def completed() -> dict[str, Any] | None:
        now = report()
        done = now["active_promotion"] is None and now["recent_promotions"]
        return now if done else None

    final = wait_for("the bake passed", completed, 180, host)
    [entry] = final["recent_promotions"]
    assert entry["outcome"] == "completed", entry
    assert final["production"]["version"] == "1" and final["last_known_good"]["version"] == "1"
    shown = cli(final_status)
    assert "completed" in shown and "v1" in shown
    answer = httpx.get(f"{state.endpoint.url}/wine-ep/traffic", headers=headers)
    assert answer.json()["traffic"] == {served: 100}
    # The demo's model sits beside it, untouched: its policy loaded, nothing in production.
    beside = json.loads(cli([*status[:3], "status", "breast-cancer", "--json"]))
    assert beside["production"] is None and beside["active_promotion"] is None

    host.process.send_signal(signal.SIGTERM)
    assert host.process.wait(timeout=90) == 0
    banner = host.output()
    assert f"  MLflow UI       {state.mlflow_ui_url}\n" in banner
    assert f"  local endpoint  {state.endpoint.url}\n" in banner
    print(
        f"devhost up in {started_at - began:.0f} s, trained in {trained_at - started_at:.0f} s, "
        f"in production {time.monotonic() - trained_at:.0f} s later; "
        f"{time.monotonic() - began:.0f} s in all"
    )
