"""The CLI sends what a person asks on the app's own queues, uploads data where the blob
trigger watches, and reads status back; on real Azurite through the same Runtime."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from adapters.storage_queue_bus import decode_body
from devhost.cli import commands
from devhost.cli.main import main
from domain.metrics import OfflineMetrics
from orchestrator.bootstrap import Runtime
from orchestrator.messages import Envelope, parse_envelope
from promotion.commands import StartPromotion
from tests.harness import RecordingTrainingBackend, policy_yaml, pump

APPROVERS = "[ml-lead@contoso.com, oncall@contoso.com]"


class PassingOfflineMetrics:
    """The MetricsReader port with a candidate that passes the staging threshold."""

    def offline(self, model: str, candidate: str, champion: str | None) -> OfflineMetrics:
        return OfflineMetrics(candidate={"auc": 0.91})

    def live(self, *args: Any) -> Any:
        raise AssertionError("no canary in these tests")


class RecordingRegistry:
    def __init__(self) -> None:
        self.tags: list[tuple[str, str, dict[str, str]]] = []

    def tag(self, model: str, version: str, tags: dict[str, str]) -> None:
        self.tags.append((model, version, tags))


def approval_runtime(make_runtime, name: str) -> Runtime:
    runtime = make_runtime(
        {
            "churn": policy_yaml(
                "churn", approval=f"{{required: true, approvers: {APPROVERS}, timeout: 1h}}"
            )
        },
        APPROVALS_QUEUE=f"appr{name}{os.getpid()}",
        training=RecordingTrainingBackend(),
        metrics=PassingOfflineMetrics(),
        registry=RecordingRegistry(),
    )
    return runtime


def awaiting_approval(runtime: Runtime, version: str = "7") -> str:
    """Start a promotion of `version`; it passes staging and waits for a person."""
    envelope = Envelope.new(
        "StartPromotion", "churn", StartPromotion(candidate_version=version), message_id="start-7"
    )
    runtime.handlers.handle(runtime.signer.sign(envelope))  # the app's own message
    active = runtime.queries.model_status("churn")["active_promotion"]
    assert active["status"] == "awaiting_approval"
    return active["id"]


def received(runtime: Runtime, queue_name: str) -> list[Envelope]:
    queue = runtime.queue(queue_name)
    messages = list(queue.receive_messages(max_messages=32, visibility_timeout=1))
    return [parse_envelope(decode_body(message.content)) for message in messages]


def test_approve_sends_the_decision_on_the_approvals_queue(make_runtime):
    runtime = approval_runtime(make_runtime, "a")
    promotion_id = awaiting_approval(runtime)

    sent = commands.send_approval(
        runtime, promotion_id, "approve", "ml-lead@contoso.com", comment="auc is fine"
    )

    [envelope] = received(runtime, runtime.settings.approvals_queue)
    assert envelope.type == "ApprovalDecision"
    assert envelope.message_id == sent.envelope.message_id
    assert envelope.model == "churn"
    assert envelope.promotion_id == promotion_id
    assert envelope.payload == {
        "promotion_id": promotion_id,
        "step": "approval",
        "candidate_version": "7",
        "decision": "approve",
        "approver": "ml-lead@contoso.com",
        "comment": "auc is fine",
    }
    assert sent.notes == ()
    # Nothing was handled here: the promotion still waits for the app to read the queue.
    assert runtime.queries.model_status("churn")["active_promotion"]["approval"] is None


def test_approve_by_someone_not_allowed_is_sent_with_a_warning(make_runtime):
    runtime = approval_runtime(make_runtime, "b")
    promotion_id = awaiting_approval(runtime)

    sent = commands.send_approval(runtime, promotion_id, "approve", "mallory@example.com")

    assert len(received(runtime, runtime.settings.approvals_queue)) == 1
    assert any("not among churn's approvers" in note for note in sent.notes)


def test_retrain_sends_retrain_requested_and_the_app_submits_that_run(make_runtime):
    backend = RecordingTrainingBackend()
    runtime = make_runtime(
        {"churn": policy_yaml("churn")},
        training=backend,
        DataStorage__blobServiceUri="https://acct.blob.core.windows.net",  # the data account
    )

    sent = commands.request_retrain(
        runtime,
        "churn",
        data_uri="https://acct.blob.core.windows.net/training-data/churn/all.csv",
        reason="new labels",
        force=True,
        requested_by="ana",
    )

    [envelope] = received(runtime, runtime.settings.orchestrator_queue)
    run_id = envelope.payload["run_id"]
    assert envelope.type == "RetrainRequested"
    assert run_id.startswith("churn-manual-") and len(run_id) == len("churn-manual-") + 12
    assert envelope.payload["force"] is True
    assert envelope.payload["requested_by"] == "ana"
    assert sent.envelope.message_id == envelope.message_id

    pump(runtime, until=lambda: bool(backend.jobs), wait=1.1)  # past the peek's visibility
    assert backend.jobs == [run_id]


def test_send_data_uploads_under_the_policy_prefix(make_runtime, tmp_path):
    runtime = make_runtime({"churn": policy_yaml("churn")})
    files = [tmp_path / "2026-01-01.csv", tmp_path / "2026-01-02.csv"]
    for number, file in enumerate(files):
        file.write_text(f"x,y\n{number},1\n")

    upload = commands.send_data(runtime, "churn", files, environ={})

    container = runtime.blob_service.get_container_client("training-data")
    names = {blob.name for blob in container.list_blobs(name_starts_with="churn/")}
    assert {"churn/2026-01-01.csv", "churn/2026-01-02.csv"} <= names
    assert [blob.blob_name for blob in upload.blobs] == [
        "churn/2026-01-01.csv",
        "churn/2026-01-02.csv",
    ]
    assert upload.blobs[0].url.endswith("/training-data/churn/2026-01-01.csv")
    body = container.get_blob_client("churn/2026-01-02.csv").download_blob().readall()
    assert body == b"x,y\n1,1\n"


def test_a_policy_in_a_container_the_app_does_not_watch_is_refused_naming_it(
    make_runtime, tmp_path, capsys
):
    """The blob trigger watches DATA_CONTAINER only: the CLI loads the policies as the app
    does and refuses the file (exit 2, the file and the field), uploading nothing."""
    elsewhere = policy_yaml("churn").replace("container: training-data", "container: other")
    runtime = make_runtime({"churn": elsewhere}, DATA_CONTAINER="training-data")
    file = tmp_path / "a.csv"
    file.write_text("x\n1\n")

    assert main(["send-data", "churn", str(file)], runtime=runtime) == 2
    error = capsys.readouterr().err
    assert "churn.yml: data.container: 'other' is not watched" in error
    assert "DATA_CONTAINER='training-data'" in error
    assert not runtime.blob_service.get_container_client("other").exists()


def test_status_json_shows_the_state_after_handled_commands(make_runtime, capsys):
    runtime = approval_runtime(make_runtime, "c")
    promotion_id = awaiting_approval(runtime)
    commands.send_approval(runtime, promotion_id, "reject", "oncall@contoso.com", comment="no")
    [decision] = received(runtime, runtime.settings.approvals_queue)
    assert runtime.handlers.handle(decision).status == "applied"

    assert main(["status", "churn", "--json"], runtime=runtime) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["active_promotion"] is None
    [entry] = status["recent_promotions"]
    assert (entry["promotion_id"], entry["outcome"]) == (promotion_id, "rejected")
    assert "seen_keys" not in status["retrain"]

    assert main(["--json", "status", "--promotion", promotion_id], runtime=runtime) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "churn"
    rejected = [record for record in report["audit"] if record["to_state"] == "rejected"]
    assert rejected and rejected[0]["detail"]["caused_by"] == "oncall@contoso.com"

    # The readable forms render the same state without error.
    assert main(["status", "churn"], runtime=runtime) == 0
    assert "rejected" in capsys.readouterr().out
    assert main(["status", "--promotion", promotion_id], runtime=runtime) == 0
    text = capsys.readouterr().out
    assert "audit trail" in text and "oncall@contoso.com" in text


def test_status_renders_an_active_promotion_with_its_gates(make_runtime, capsys):
    runtime = approval_runtime(make_runtime, "d")
    promotion_id = awaiting_approval(runtime)

    assert main(["status", "churn"], runtime=runtime) == 0

    text = capsys.readouterr().out
    assert promotion_id in text
    assert "awaiting_approval" in text
    assert "threshold:auc" in text and "pass" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retrain", "nope"], "unknown model 'nope'"),
        (["status", "nope"], "unknown model 'nope'"),
        (["send-data", "nope", "x.csv"], "unknown model 'nope'"),
        (["approve", "churn-v1-1", "--as", "ana"], "unknown promotion 'churn-v1-1'"),
        (["rollback", "churn-v1-1", "--reason", "bad"], "unknown promotion 'churn-v1-1'"),
        (["status", "--promotion", "churn-v1-1"], "unknown promotion 'churn-v1-1'"),
        (["approve", "churn-v1-1"], "required: --as"),
        (["pause", "churn-v1-1", "--as", " "], "--as must name"),
        (["status"], "status needs a MODEL or --promotion"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(make_runtime, capsys, argv, message):
    runtime = make_runtime({"churn": policy_yaml("churn")})

    assert main(argv, runtime=runtime) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_bad_input_in_json_mode_is_a_json_error(make_runtime, capsys):
    runtime = make_runtime({"churn": policy_yaml("churn")})

    assert main(["--json", "retrain", "nope"], runtime=runtime) == 2

    error = json.loads(capsys.readouterr().err)
    assert error["exit_code"] == 2 and "unknown model 'nope'" in error["error"]


def test_main_approve_end_to_end_with_a_settings_file(make_runtime, tmp_path, monkeypatch, capsys):
    runtime = approval_runtime(make_runtime, "e")
    promotion_id = awaiting_approval(runtime)
    settings = runtime.settings
    values = {
        "AzureWebJobsStorage": str(settings.storage_connection_string),
        "POLICY_DIR": str(settings.policy_dir),
        "RETRAIN_LOCAL_DIR": str(settings.local_dir),
        "STATE_CONTAINER": settings.state_container,
        "ORCHESTRATOR_QUEUE": settings.orchestrator_queue,
        "APPROVALS_QUEUE": settings.approvals_queue,
        "LIFECYCLE_EVENTS_HUB": settings.lifecycle_events_hub,
    }
    for name in values:  # the file, not the test process, provides these
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))

    code = main(
        [
            "--settings",
            str(settings_file),
            "approve",
            promotion_id,
            "--as",
            "oncall@contoso.com",
            "--comment",
            "ship it",
        ]
    )

    assert code == 0
    text = capsys.readouterr().out
    [envelope] = received(runtime, settings.approvals_queue)
    assert envelope.message_id in text
    assert "approvers" in text
    assert envelope.payload["approver"] == "oncall@contoso.com"
    assert envelope.payload["comment"] == "ship it"
    assert envelope.payload["step"] == "approval"


def test_main_send_data_end_to_end(make_runtime, tmp_path, monkeypatch, capsys):
    runtime = make_runtime({"churn": policy_yaml("churn")})
    monkeypatch.delenv("DataStorage", raising=False)
    monkeypatch.delenv("DATA_CONTAINER", raising=False)
    file = tmp_path / "batch-1.csv"
    file.write_text("x,y\n1,0\n")

    code = main(["send-data", "churn", str(file), "--json"], runtime=runtime)

    assert code == 0
    [blob] = json.loads(capsys.readouterr().out)["uploaded"]
    assert blob["container"] == "training-data"
    assert blob["blob"] == "churn/batch-1.csv"
    container = runtime.blob_service.get_container_client("training-data")
    assert container.get_blob_client("churn/batch-1.csv").exists()


def test_rollback_pause_resume_and_promote_now_name_the_promotion(make_runtime):
    runtime = approval_runtime(make_runtime, "f")
    promotion_id = awaiting_approval(runtime)

    commands.request_pause(runtime, promotion_id, "ana", "weekend")
    commands.request_resume(runtime, promotion_id, "ana")
    commands.request_promote_now(runtime, promotion_id, "hotfix", "ana")
    commands.request_rollback(runtime, promotion_id, "bad feature", "ana")

    envelopes = received(runtime, runtime.settings.orchestrator_queue)
    by_type = {envelope.type: envelope for envelope in envelopes}
    assert set(by_type) >= {"PausePromotion", "ResumePromotion", "PromoteNow", "RollbackRequested"}
    rollback = by_type["RollbackRequested"]
    assert rollback.promotion_id == promotion_id
    assert rollback.payload == {
        "promotion_id": promotion_id,
        "reason": "bad feature",
        "requested_by": "ana",
    }
    assert runtime.handlers.handle(rollback).status == "applied"


def test_a_settings_error_is_bad_input(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__blobServiceUri", raising=False)
    monkeypatch.setenv("RETRAIN_LOCAL_DIR", str(tmp_path))  # no devhost runs there

    assert main(["status", "churn"]) == 2
    assert "AzureWebJobsStorage" in capsys.readouterr().err
    assert main(["--settings", str(tmp_path / "missing.json"), "status", "churn"]) == 2
    assert "no such settings file" in capsys.readouterr().err


def test_main_reject_sends_the_decision_as_the_approver(make_runtime, capsys):
    runtime = approval_runtime(make_runtime, "g")
    promotion_id = awaiting_approval(runtime, version="7")

    code = main(
        ["reject", promotion_id, "--as", "oncall@contoso.com", "--comment", "latency too high"],
        runtime=runtime,
    )

    assert code == 0
    [envelope] = received(runtime, runtime.settings.approvals_queue)
    assert envelope.type == "ApprovalDecision"
    assert (envelope.model, envelope.promotion_id) == ("churn", promotion_id)
    assert envelope.payload == {
        "promotion_id": promotion_id,
        "step": "approval",
        "candidate_version": "7",
        "decision": "reject",
        "approver": "oncall@contoso.com",
        "comment": "latency too high",
    }
    text = capsys.readouterr().out
    assert envelope.message_id in text
    assert f"reject promotion {promotion_id}, step approval, candidate v7" in text
    assert "as oncall@contoso.com" in text
    assert "note:" not in text  # an allowed approver, a promotion that waits: nothing to warn
    # The message is one the orchestrator acts on: the promotion ends rejected by that person.
    assert runtime.handlers.handle(envelope).status == "applied"
    [entry] = runtime.queries.model_status("churn")["recent_promotions"]
    assert (entry["promotion_id"], entry["outcome"]) == (promotion_id, "rejected")


def test_against_azure_the_token_is_the_azure_credentials_for_the_api(monkeypatch):
    """ENTRA_TENANT_ID set: the CLI asks the app's one credential (az login) for a token for
    `<ENTRA_API_AUDIENCE>/.default` and names the account the app will record."""
    import jwt

    from tests.fakes import fake_runtime, fake_settings, start_promotion
    from tests.orchestrator.test_handlers import canary_policy

    token = jwt.encode({"preferred_username": "ana@contoso.com", "oid": "o-1"}, "k" * 32)
    scopes: list[str] = []

    class Credential:
        def get_token(self, scope: str) -> Any:
            scopes.append(scope)
            return type("AccessToken", (), {"token": token})()

    monkeypatch.setattr("adapters.azure_credential.azure_credential", lambda: Credential())
    settings = fake_settings(
        ENTRA_TENANT_ID="72f988bf-86f1-41af-91ab-2d7cd011db47",
        ENTRA_API_AUDIENCE="api://retrain-orchestrator, 6e8f0b7c-1d2a-4c3b-9e5f-0a1b2c3d4e5f",
    )
    w = fake_runtime(canary_policy(), settings=settings)
    w.runtime.bus_for = lambda queue: w.bus  # type: ignore[method-assign]
    w.seed_champion("churn", "1")
    w.handle(start_promotion("churn", "2"))
    active = w.aggregate("churn").promotion.active
    assert active is not None

    sent = commands.send_approval(w.runtime, active.id, "approve", "ml-lead@contoso.com")

    assert scopes == ["api://retrain-orchestrator/.default"]
    [envelope] = w.bus.envelopes("ApprovalDecision")
    assert envelope.auth == token
    assert any("signed in as ana@contoso.com" in note for note in sent.notes)
    assert token not in json.dumps(sent.to_json())  # the token is never printed

    def no_login(scope: str) -> Any:
        raise RuntimeError("DefaultAzureCredential failed to retrieve a token\nmore lines")

    monkeypatch.setattr(Credential, "get_token", lambda self, scope: no_login(scope))
    with pytest.raises(commands.CliError, match="run `az login`"):
        commands.request_pause(w.runtime, active.id, "oncall@contoso.com")


def test_audit_and_runs_show_a_page_and_all_follows_the_tokens(make_runtime, capsys):
    runtime = approval_runtime(make_runtime, "p")
    promotion_id = awaiting_approval(runtime)
    everything = [r.model_dump(mode="json") for r in runtime.ports.audit.read("churn")]
    assert len(everything) > 3

    assert main(["audit", "churn", "--limit", "2", "--json"], runtime=runtime) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["records"] == everything[:2] and first["continuation"]
    token = first["continuation"]
    assert main(["audit", "churn", "--limit", "2", "--continuation", token, "--json"],
                runtime=runtime) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["records"] == everything[2:4]
    assert main(["audit", "churn", "--limit", "2", "--all", "--json"], runtime=runtime) == 0
    every = json.loads(capsys.readouterr().out)
    assert every["records"] == everything and every["continuation"] is None

    # Text: one page and how to read the next.
    assert main(["audit", "churn", "--limit", "1"], runtime=runtime) == 0
    assert "--continuation" in capsys.readouterr().out
    assert main(["status", "--promotion", promotion_id, "--limit", "1", "--json"],
                runtime=runtime) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert len(report["audit"]) == 1 and report["continuation"]
    assert main(["status", "--promotion", promotion_id, "--all", "--json"], runtime=runtime) == 0
    report = json.loads(capsys.readouterr().out)
    mine = [r for r in everything if r["promotion_id"] == promotion_id]
    assert report["audit"] == mine and report["continuation"] is None

    assert main(["runs", "churn", "--json"], runtime=runtime) == 0
    assert json.loads(capsys.readouterr().out) == {
        "model": "churn",
        "runs": [],
        "continuation": None,
    }

    # Bad input: exit 2, one line naming the flag.
    promotion_token = commands.audit_report(runtime, "churn", promotion_id=promotion_id, limit=1)[
        "continuation"
    ]
    for argv, flag in (
        (["audit", "churn", "--limit", "0"], "--limit"),
        (["audit", "churn", "--limit", "many"], "--limit"),
        (["audit", "churn", "--continuation", "forged"], "--continuation"),
        (["audit", "churn", "--continuation", promotion_token], "--continuation"),
        (["runs", "nobody"], "unknown model"),
    ):
        assert main(argv, runtime=runtime) == 2, argv
        assert flag in capsys.readouterr().err
