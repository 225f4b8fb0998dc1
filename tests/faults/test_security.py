"""Security: HTTP auth levels, what health reveals, who may approve what, no secret in the
repository, and Azurite never phoning home."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

import adapters.azurite as azurite_module
from adapters.azurite import DEV_KEY, Azurite
from orchestrator.bootstrap import Runtime
from orchestrator.messages import Envelope
from promotion.commands import ApprovalDecision, StartPromotion
from tests.faults.support import (
    DeadLetterSpy,
    FixedMetrics,
    RecordingEndpoint,
    RecordingRegistry,
    TrainingBackend,
    dead_letter_spy,
    fuzz,
    installed,
    user_function,
)
from tests.harness import policy_yaml, signed
from triggers import health as health_module
from triggers import messages

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def indexed() -> list[dict[str, Any]]:
    """The function JSON the host reads. Indexed in a child process: get_functions() may run
    only once per process, and other tests index this one."""
    probe = (
        "import json, function_app; "
        "print(json.dumps([json.loads(f.get_function_json()) "
        "for f in function_app.app.get_functions()]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def test_every_http_route_but_health_needs_a_function_key(indexed: list[dict[str, Any]]) -> None:
    levels = {}
    for function in indexed:
        for binding in function["bindings"]:
            if binding["type"] == "httpTrigger":
                levels[binding["route"]] = binding.get("authLevel")
    assert levels.pop("health") == "ANONYMOUS"
    assert levels, "no HTTP route besides health?"
    assert set(levels) >= {
        "retrain",
        "models/{model}",
        "promotions/{promotion_id}",
        "promotions/{promotion_id}/rollback",
    }
    assert all(level == "FUNCTION" for level in levels.values()), levels


health = user_function(health_module.health)


@fuzz(50)
@given(
    query=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=3),
    headers=st.dictionaries(
        st.sampled_from(["x-forwarded-for", "x-ms-client-principal-name", "accept", "cookie"]),
        st.text(max_size=30),
    ),
    body=st.binary(max_size=50),
)
def test_health_reveals_nothing_but_a_status(
    monkeypatch: pytest.MonkeyPatch,
    tally: Counter[str],
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
) -> None:
    tally["health requests"] += 1

    def no_runtime() -> Runtime:
        raise AssertionError("health must not touch the runtime (state, settings, clients)")

    monkeypatch.setattr("orchestrator.bootstrap.get_runtime", no_runtime)
    request = func.HttpRequest("GET", "/api/health", params=query, headers=headers, body=body)
    response = health(request)
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "ok"}
    assert set(response.headers) <= {"content-type"}


# --------------------------------------------------------------------------- approvals

ALLOWED = ("alice@example.com", "Bob@Example.com")
FRAUD_APPROVER = "mallory@example.com"  # allowed for fraud, not for churn
VERSION = "3"


def approval_policy(model: str, approvers: tuple[str, ...]) -> str:
    names = ", ".join(approvers)
    return policy_yaml(model, approval=f"{{required: true, approvers: [{names}], timeout: 1h}}")


@dataclass
class Promoted:
    runtime: Runtime
    promotion_id: str
    endpoint: RecordingEndpoint
    dead_letters: DeadLetterSpy


@pytest.fixture
def promoted(make_runtime: Callable[..., Runtime], azurite: Azurite) -> Promoted:
    """churn's candidate v3 passed staging and awaits approval, built through the handler."""
    endpoint = RecordingEndpoint()
    dead_letters = dead_letter_spy(azurite)
    runtime = make_runtime(
        {
            "churn": approval_policy("churn", ALLOWED),
            "fraud": approval_policy("fraud", (FRAUD_APPROVER,)),
        },
        training=TrainingBackend(),
        metrics=FixedMetrics({"auc": 0.95}),  # no MLflow data: our own port, faked
        registry=RecordingRegistry(),
        endpoints=lambda policy: endpoint,
        dead_letters=dead_letters,
    )
    start = Envelope.new("StartPromotion", "churn", StartPromotion(candidate_version=VERSION))
    assert runtime.handlers.handle(runtime.signer.sign(start)).status == "applied"
    active = runtime.queries.model_status("churn")["active_promotion"]
    assert active["status"] == "awaiting_approval", active
    return Promoted(runtime, active["id"], endpoint, dead_letters)


def send_approval(promoted: Promoted, model: str, message_id: str, **payload: str) -> None:
    """The approval, sent with a token of the person its payload names (none for a blank
    name): who approves is who the token says (orchestrator/people.py)."""
    command = ApprovalDecision.model_validate(payload)
    envelope = Envelope.new(
        "ApprovalDecision", model, command, promotion_id=command.promotion_id, message_id=message_id
    )
    if command.approver.strip():
        envelope = signed(promoted.runtime, envelope, command.approver)
    with installed(promoted.runtime):
        user_function(messages.approvals_queue)(func.ServiceBusMessage(body=envelope.to_bytes()))


def active(runtime: Runtime) -> dict[str, Any]:
    return dict(runtime.queries.model_status("churn")["active_promotion"])


def is_allowed(approver: str, approvers: tuple[str, ...] = ALLOWED) -> bool:
    return approver.casefold() in {name.casefold() for name in approvers}


def wrong_values(promotion_id: str) -> dict[str, st.SearchStrategy[str]]:
    """For each part of an approval, values that must not pass for churn's promotion."""
    return {
        "model": st.just("fraud"),  # whose approver list holds mallory, and no promotion
        "promotion_id": (
            st.sampled_from([promotion_id + "x", promotion_id.upper(), "", "*", "fraud-v3"])
            | st.text(max_size=40)
        ).filter(lambda value: value != promotion_id),
        "step": (
            st.sampled_from(["staging", "canary-1", "deploy", "bake", "APPROVAL", "approval "])
            | st.text(max_size=12)
        ).filter(lambda value: value != "approval"),
        "candidate_version": (
            st.sampled_from(["4", "03", "3.0", " 3", "", "v3"]) | st.text(max_size=5)
        ).filter(lambda value: value != VERSION),
        "approver": (
            st.sampled_from(
                [
                    FRAUD_APPROVER,
                    "alice@example.com.evil.test",
                    "alice",
                    "alice@example.com\n",
                    " bob@example.com",
                    "system",
                    "policy:on_timeout",
                    "*",
                ]
            )
            | st.text(min_size=1, max_size=30)
        ).filter(lambda value: not is_allowed(value)),
    }


@fuzz(100)
@given(data=st.data())
def test_an_approval_that_does_not_match_changes_nothing_and_is_audited(
    promoted: Promoted, tally: Counter[str], data: st.DataObject
) -> None:
    """Wrong approver, step, version, promotion or model (one or several): refused. Someone who
    may not approve that model is refused before the rules see it (and dead-lettered); a
    right person's answer that does not match the promotion is refused by the rules."""
    promotion_id = promoted.promotion_id
    wrong = wrong_values(promotion_id)
    size = data.draw(st.sampled_from([1, 1, 1, 2, 3]), "how many parts are wrong")
    broken = data.draw(
        st.lists(st.sampled_from(sorted(wrong)), min_size=size, max_size=size, unique=True),
        "wrong parts",
    )
    approval = {
        "model": "churn",
        "promotion_id": promotion_id,
        "step": "approval",
        "candidate_version": VERSION,
        "approver": data.draw(st.sampled_from(ALLOWED), "approver"),
        "decision": data.draw(st.sampled_from(["approve", "reject"]), "decision"),
    }
    for part in broken:
        approval[part] = data.draw(wrong[part], part)
    tally["wrong " + "+".join(sorted(broken))] += 1
    model = approval.pop("model")

    runtime = promoted.runtime
    before = active(runtime)
    since = runtime.ports.store.load(model)[0].version
    message_id = f"approval-{uuid.uuid4().hex}"
    send_approval(promoted, model, message_id, **approval)

    assert active(runtime) == before, "a refused approval changed the promotion"
    assert promoted.endpoint.deployed == []
    unauthorized = not is_allowed(
        approval["approver"], ALLOWED if model == "churn" else (FRAUD_APPROVER,)
    )
    assert len(promoted.dead_letters.calls) == (1 if unauthorized else 0)
    promoted.dead_letters.calls.clear()
    audit = [
        record for record in runtime.ports.audit.read(model, since) if record.cause_id == message_id
    ]
    refusal = "message.rejected" if unauthorized else "approval.refused"
    assert [record.action for record in audit] == [refusal], audit
    assert audit[0].detail["reason"]


def test_only_the_right_approval_moves_the_promotion(promoted: Promoted) -> None:
    runtime, promotion_id = promoted.runtime, promoted.promotion_id
    right = {
        "promotion_id": promotion_id,
        "step": "approval",
        "candidate_version": VERSION,
        "decision": "approve",
    }
    # fraud's approver (with a valid token), on churn's promotion: refused, dead-lettered.
    send_approval(promoted, "churn", "m1", **right, approver=FRAUD_APPROVER)
    assert active(runtime)["status"] == "awaiting_approval"
    assert len(promoted.dead_letters.calls) == 1
    # One of churn's approvers (names compare case-insensitively): accepted.
    send_approval(promoted, "churn", "m2", **right, approver="ALICE@example.com")
    assert active(runtime)["status"] == "deploying"
    assert promoted.endpoint.deployed
    # The same answer again, under a new message id: the promotion has moved on, refused.
    send_approval(promoted, "churn", "m3", **right, approver="Bob@Example.com")
    assert active(runtime)["status"] == "deploying"
    actions = [
        (record.cause_id, record.action)
        for record in runtime.ports.audit.read("churn")
        if record.cause_type == "ApprovalDecision"
    ]
    assert ("m1", "message.rejected") in actions and ("m3", "approval.refused") in actions
    assert not any(action == "approval.refused" for cause, action in actions if cause == "m2")
    assert len(promoted.dead_letters.calls) == 1  # m1's


class MetricsDown:
    """MetricsReader with MLflow unreachable."""

    def offline(self, model: str, candidate_version: str, champion: str | None) -> Any:
        raise ConnectionError("MLflow is unreachable")

    def live(self, model: str, promotion_id: str, step: int, arms: Any) -> Any:
        raise ConnectionError("MLflow is unreachable")


def test_a_gate_never_judges_metrics_the_message_brought(
    make_runtime: Callable[..., Runtime],
) -> None:
    endpoint = RecordingEndpoint()
    runtime = make_runtime(
        {"churn": policy_yaml("churn")},
        training=TrainingBackend(),
        metrics=MetricsDown(),
        registry=RecordingRegistry(),
        endpoints=lambda policy: endpoint,
    )
    forged = Envelope.new(
        "StartPromotion",
        "churn",
        {"candidate_version": "5", "offline": {"candidate": {"auc": 0.99}}},
    )
    # Signed, as if the app itself had sent it: even then the metrics it carries are ignored.
    runtime.handlers.handle(runtime.signer.sign(forged))
    status = runtime.queries.model_status("churn")["active_promotion"]["status"]
    assert (status, endpoint.deployed) == ("staging_gate", [])  # inconclusive: retried later


# --------------------------------------------------------------------------- secrets


def repository_files() -> list[Path]:
    """Tracked files, and new files not ignored (what the next commit would hold)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _key_value(name: str) -> re.Pattern[str]:
    # Built from pieces so that this file does not match its own patterns.
    return re.compile(re.escape(name) + "=" + r"""([^;"'`\s,)}\]]*)""", re.IGNORECASE)


BASE64_KEY = re.compile(r"(?<![A-Za-z0-9+/=])([A-Za-z0-9+/]{86}==)(?![A-Za-z0-9+/=])")
SRI_HASH = re.compile(r"sha(?:256|384|512)-$")  # package-lock integrity hashes precede it
KEY_SETTINGS = [_key_value("Account" + "Key"), _key_value("SharedAccess" + "Key")]
SAS_SIGNATURE = re.compile(r"[?&]s" + r"ig=([A-Za-z0-9%+/=]{20,})")
PRIVATE_KEY = re.compile("-----BEGIN ([A-Z ]+ )?PRIVATE" + " KEY-----")
SERVICE_BUS = re.compile(r"Endpoint=sb" + r"://[^;\s\"']+;[^\"'\s]*Key=([^;\"'\s]+)", re.I)
# A value that names where the key comes from, rather than holding one.
PLACEHOLDER = re.compile(r"^(|\{.*|\$.*|<.*|%.*|\.\.\.|\*+|x+|your.*|\[.*)$", re.IGNORECASE)


def find_secrets(text: str) -> list[str]:
    found = []
    for match in BASE64_KEY.finditer(text):
        key = match[1]
        if key != DEV_KEY and not SRI_HASH.search(text[max(0, match.start() - 7) : match.start()]):
            found.append(f"storage-account-like key {key[:6]}...")
    for pattern in (*KEY_SETTINGS, SERVICE_BUS, SAS_SIGNATURE):
        for match in pattern.finditer(text):
            value = match[1]
            if value != DEV_KEY and not PLACEHOLDER.match(value):
                found.append(f"{match[0][:30]}...")
    found.extend(f"{match[0]}" for match in PRIVATE_KEY.finditer(text))
    return found


def test_the_secret_scanner_finds_what_it_looks_for() -> None:
    fake_key = ("AbC1" * 22)[:86] + "=="
    account = "Account" + "Key"
    assert find_secrets(f"x = '{fake_key}'")
    assert find_secrets(f"DefaultEndpointsProtocol=https;AccountName=a;{account}=abc123;")
    assert find_secrets(
        "Endpoint=sb" + "://ns.servicebus.windows.net/;SharedAccessKeyName=r;"
        "SharedAccess" + "Key=c2VjcmV0;"
    )
    assert find_secrets("https://a.blob.core.windows.net/c?sv=2022&s" + "ig=" + "A" * 40)
    assert find_secrets("-----BEGIN RSA PRIVATE" + " KEY-----")
    # Not secrets: Azurite's published key, f-string and settings placeholders, SRI hashes.
    assert not find_secrets(f"{account}={DEV_KEY};")
    assert not find_secrets(account + "={DEV_KEY};" + account + "=<key>;")
    assert not find_secrets(f'"integrity": "sha512-{fake_key}"')


def test_the_repository_holds_no_secret() -> None:
    files = repository_files()
    assert len(files) > 50
    leaks = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary: no connection string in it
        found = find_secrets(text)
        if found:
            leaks[str(path.relative_to(ROOT))] = found
    assert leaks == {}
    print(f"\nFAULTS secret scan: {len(files)} files")


# --------------------------------------------------------------------------- Azurite


def test_start_azurite_passes_disable_telemetry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    launched: list[list[str]] = []

    class Stop(Exception):
        pass

    def popen(command: list[str], **kwargs: Any) -> None:
        launched.append(list(command))
        raise Stop

    monkeypatch.setattr(azurite_module, "azurite_binary", lambda: Path("/bin/azurite"))
    monkeypatch.setattr(azurite_module.subprocess, "Popen", popen)
    with pytest.raises(Stop):
        azurite_module.start_azurite(tmp_path)
    [command] = launched
    assert "--disableTelemetry" in command


# A command line that starts Azurite: `azurite ...`, `npx azurite`, node_modules/.bin/azurite,
# the azurite-blob/-queue/-table entry points, or the Docker image. Not pytest's marker
# expressions (`-m azurite`, `-m "not azurite"`), which select tests.
SHELL_LAUNCH = re.compile(
    r"(?<!\bnot)(?<!-m)(?<!-m\s)"
    r"(?:^|[\s;&|(`'\"$])(?:npx\s+(?:-\S+\s+)*)?(?:\S*node_modules/\.bin/)?"
    r"azurite(?:-blob|-queue|-table)?(?=\s+-|\s*$|\s*[;&|)`'\"])"
    r"|mcr\.microsoft\.com/azure-storage/azurite",
    re.MULTILINE,
)
SUBPROCESS_CALLS = {
    "Popen",
    "run",
    "call",
    "check_call",
    "check_output",
    "system",
    "create_subprocess_exec",
    "create_subprocess_shell",
    "spawnv",
    "spawnvp",
    "execv",
    "execvp",
}


AZURITE_PROGRAM = re.compile(
    r"azurite_binary\(|\.bin/azurite|['\"](?:npx\s+)?azurite(?:-blob|-queue|-table)?['\"\s]"
)


def python_launches(path: Path, text: str) -> list[tuple[str, bool]]:
    """(where, passes --disableTelemetry) for each process started with an Azurite program.
    The command is often a variable built a few lines before the call: its assignments count."""
    tree = ast.parse(text)
    assigned: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    segment = ast.get_source_segment(text, node.value) or ""
                    assigned.setdefault(target.id, []).append(segment)
    sites = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        name = call.func.attr if isinstance(call.func, ast.Attribute) else None
        name = call.func.id if isinstance(call.func, ast.Name) else name
        if name not in SUBPROCESS_CALLS:
            continue
        commands = list(call.args[:1]) + [kw.value for kw in call.keywords if kw.arg == "args"]
        source = ""
        for command in commands:
            source += ast.get_source_segment(text, command) or ""
            if isinstance(command, ast.Name):
                source += "".join(assigned.get(command.id, []))
        if AZURITE_PROGRAM.search(source):
            sites.append((f"{path.name}:{call.lineno}", "--disableTelemetry" in source))
    return sites


def shell_launches(path: Path, text: str) -> list[tuple[str, bool]]:
    """(where, passes --disableTelemetry) for each Azurite command line in a Makefile, script,
    package.json script, Dockerfile, YAML or Markdown file."""
    joined = re.sub(r"\\\n", " ", text)  # shell line continuations
    sites = []
    lines = joined.splitlines()
    for number, line in enumerate(lines, 1):
        if SHELL_LAUNCH.search(line) and not line.lstrip().startswith(("#", "//", '"azurite"')):
            sites.append((f"{path.name}:{number}", "--disableTelemetry" in line))
    return sites


def test_azurite_is_started_with_telemetry_disabled_everywhere() -> None:
    sites: list[tuple[str, bool]] = []
    for path in repository_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("node_modules/") or path.name == "package-lock.json":
            continue
        if path == Path(__file__).resolve():
            continue  # this file names the launch patterns it looks for
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if "azurite" not in text.lower():
            continue
        if path.suffix == ".py":
            sites.extend(python_launches(path, text))
        else:
            sites.extend(shell_launches(path, text))
        if path.name == "package.json":
            scripts = json.loads(text).get("scripts", {})
            sites.extend(
                (f"package.json:scripts.{name}", "--disableTelemetry" in script)
                for name, script in scripts.items()
                if "azurite" in script
            )
    print(f"\nFAULTS azurite launch sites: {sites}")
    # The scan finds the launch we know of (adapters/azurite.py start_azurite).
    assert any(where.startswith("azurite.py:") and ok for where, ok in sites), sites
    assert [where for where, disabled in sites if not disabled] == []


def test_the_launch_scan_recognises_azurite_command_lines() -> None:
    def found(text: str, name: str = "Makefile") -> list[bool]:
        return [ok for _, ok in shell_launches(Path(name), text)]

    assert found("\tnpx azurite --silent --location .azurite\n") == [False]
    assert found("azurite-blob --blobPort 0 --disableTelemetry\n") == [True]
    assert found("run: node_modules/.bin/azurite \\\n  --disableTelemetry -l x\n") == [True]
    assert found("docker run mcr.microsoft.com/azure-storage/azurite\n") == [False]
    assert found("Azurite is started with care, by the tests.\n", "README.md") == []
    assert found('\tpytest -n 2 -m "not azurite" $(PYTEST_ARGS)\n') == []
    assert found("\tpytest -n 2 -m azurite\n") == []
    assert found("\tpytest -m 'azurite' && npx azurite -s\n") == [False]
    code = "import subprocess\ndef go():\n    subprocess.Popen(['node_modules/.bin/azurite'])\n"
    assert python_launches(Path("x.py"), code) == [("x.py:3", False)]
    built = (
        "import subprocess\n"
        "command = [str(azurite_binary()), '--silent']\n"
        "subprocess.run(command)\n"
    )
    assert python_launches(Path("y.py"), built) == [("y.py:3", False)]
    other = (
        "import subprocess\ndef f(azurite):\n    subprocess.Popen([sys.executable, '-m', 'x'])\n"
    )
    assert python_launches(Path("z.py"), other) == []
