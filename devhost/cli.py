"""`python -m devhost.cli`: what a person does, against local (Azurite) or Azure alike.

Every command goes through the same ports as the app (`orchestrator.bootstrap.Runtime`):
commands are *sent* as envelopes on the app's queues (Service Bus in Azure, Azurite queues
locally) and handled by the running app, never here; data files are uploaded where the blob
trigger watches; status is read from the state store and audit log.

The core is a set of small functions taking a Runtime (`send_approval`, `request_retrain`,
`request_rollback`, `request_promote_now`, `request_pause`, `request_resume`, `send_data`,
`model_report`, `promotion_report`); `main` is a thin argparse and rich layer over them.
Exit codes: 0 done, 2 bad input (unknown model or promotion, a missing flag, bad settings),
1 anything else that failed. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from pydantic import BaseModel, ValidationError

from orchestrator.messages import Envelope

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from rich.console import Console, RenderableType

    from orchestrator.bootstrap import Runtime
    from orchestrator.policy import ModelPolicy

PROG = "python -m devhost.cli"
DATA_CONNECTION = "DataStorage"  # the connection the blob trigger reads (triggers/data.py)
_DEV_STORAGE = "usedevelopmentstorage=true"
PIPED_WIDTH = 140
SETTINGS_HELP = "a local.settings.json whose Values are loaded first (the environment wins)"


# --------------------------------------------------------------------------- errors


class CliError(Exception):
    """A failure worth one line to the person; `exit_code` 1."""

    exit_code = 1


class BadInput(CliError):
    """The person asked for something that cannot be: unknown model or promotion, bad flags."""

    exit_code = 2


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SentMessage:
    """One envelope sent on one of the app's queues, and what the person should know."""

    queue: str
    envelope: Envelope
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": True,
            "queue": self.queue,
            "message_id": self.envelope.message_id,
            "type": self.envelope.type,
            "model": self.envelope.model,
            "promotion_id": self.envelope.promotion_id,
            "payload": self.envelope.payload,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class UploadedBlob:
    file: str
    container: str
    blob_name: str
    url: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "container": self.container,
            "blob": self.blob_name,
            "url": self.url,
            "size": self.size,
        }


@dataclass(frozen=True)
class DataUpload:
    model: str
    blobs: list[UploadedBlob]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "uploaded": [blob.to_json() for blob in self.blobs],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- lookups


def policy_for(runtime: Runtime, model: str) -> ModelPolicy:
    policy = runtime.policies.get(model)
    if policy is None:
        known = ", ".join(sorted(runtime.policies)) or "none"
        raise BadInput(
            f"unknown model {model!r} (policies in {runtime.settings.policy_dir}: {known})"
        )
    return policy


def find_promotion(runtime: Runtime, promotion_id: str) -> tuple[str, dict[str, Any]]:
    """(model, promotion document) of an active or recent promotion; BadInput when unknown."""
    found = runtime.orchestrator.find_promotion(promotion_id)
    if found is None:
        raise BadInput(
            f"unknown promotion {promotion_id!r} (not active nor in any model's recent history)"
        )
    return found


def default_actor() -> str:
    """Who a command is from when `--as` is optional: the local user, marked as the CLI."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers): still say where it came from
        user = "unknown"
    return f"cli:{user}"


# --------------------------------------------------------------------------- commands


def _send(
    runtime: Runtime, queue: str, envelope: Envelope, notes: Sequence[str] = ()
) -> SentMessage:
    runtime.bus_for(queue).send(envelope)
    return SentMessage(queue=queue, envelope=envelope, notes=tuple(notes))


def _message_id(kind: str) -> str:
    return f"cli:{kind}:{uuid.uuid4().hex}"


def _command(command_type: type[BaseModel], **fields: Any) -> BaseModel:
    try:
        return command_type(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise BadInput(f"invalid {command_type.__name__}: {problems}") from exc


def send_approval(
    runtime: Runtime,
    promotion_id: str,
    decision: Literal["approve", "reject"],
    approver: str,
    *,
    comment: str = "",
    step: str | None = None,
    candidate_version: str | None = None,
) -> SentMessage:
    """Send an ApprovalDecision on the approvals queue, filled from the promotion's state.

    `step` and `candidate_version` default to the active promotion's current ones. The app's
    approvals trigger checks the approver against the model's policy; this only warns.
    """
    from promotion.commands import ApprovalDecision

    if not approver.strip():
        raise BadInput("--as must name the approver")
    model, promotion = find_promotion(runtime, promotion_id)
    policy = policy_for(runtime, model)
    active = "status" in promotion and "step" in promotion  # history entries have neither
    notes: list[str] = []
    if active and promotion["status"] != "awaiting_approval":
        notes.append(
            f"promotion is {promotion['status']} (step {promotion['step']}), not awaiting "
            "approval: the orchestrator will refuse this answer"
        )
    if not active:
        outcome = promotion.get("outcome", "finished")
        if step is None or candidate_version is None:
            raise BadInput(
                f"promotion {promotion_id!r} has ended ({outcome}); nothing awaits approval "
                "(pass --step and --version to send an answer anyway)"
            )
        notes.append(f"promotion has ended ({outcome}): the orchestrator will refuse this answer")
    step = step or promotion["step"]
    candidate_version = candidate_version or promotion["candidate_version"]
    approvers = list(policy.approval.approvers)
    if approver.casefold() not in {name.casefold() for name in approvers}:
        allowed = ", ".join(approvers) or "nobody"
        notes.append(
            f"{approver} is not among {model}'s approvers ({allowed}): the orchestrator will "
            "refuse this answer"
        )
    command = _command(
        ApprovalDecision,
        promotion_id=promotion_id,
        step=step,
        candidate_version=candidate_version,
        decision=decision,
        approver=approver,
        comment=comment,
    )
    envelope = Envelope.new(
        "ApprovalDecision",
        model,
        command,
        promotion_id=promotion_id,
        message_id=_message_id(decision),
    )
    return _send(runtime, runtime.settings.approvals_queue, envelope, notes)


def manual_run_id(model: str) -> str:
    """`<model>-manual-<12 hex>`, with characters a job name cannot hold made dashes."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", model).strip("-_") or "model"
    return f"{slug}-manual-{uuid.uuid4().hex[:12]}"


def request_retrain(
    runtime: Runtime,
    model: str,
    *,
    data_uri: str | None = None,
    reason: str = "manual",
    force: bool = False,
    requested_by: str | None = None,
) -> SentMessage:
    """Send RetrainRequested on the orchestrator queue; the run id is in the payload."""
    from pipelines.retrain_policy import RetrainRequested

    policy_for(runtime, model)
    run_id = manual_run_id(model)
    command = _command(
        RetrainRequested,
        run_id=run_id,
        reason=reason,
        data_uri=data_uri,
        force=force,
        requested_by=requested_by or default_actor(),
    )
    envelope = Envelope.new("RetrainRequested", model, command, message_id=f"cli:{run_id}")
    return _send(runtime, runtime.settings.orchestrator_queue, envelope)


def _promotion_command(
    runtime: Runtime,
    promotion_id: str,
    command_type: type[BaseModel],
    kind: str,
    **fields: Any,
) -> SentMessage:
    model, promotion = find_promotion(runtime, promotion_id)
    notes = []
    if "status" not in promotion:
        outcome = promotion.get("outcome", "finished")
        notes.append(f"promotion has ended ({outcome}): the orchestrator will change nothing")
    command = _command(command_type, promotion_id=promotion_id, **fields)
    envelope = Envelope.new(
        command_type.__name__,
        model,
        command,
        promotion_id=promotion_id,
        message_id=_message_id(kind),
    )
    return _send(runtime, runtime.settings.orchestrator_queue, envelope, notes)


def request_rollback(
    runtime: Runtime, promotion_id: str, reason: str, requested_by: str | None = None
) -> SentMessage:
    from promotion.commands import RollbackRequested

    return _promotion_command(
        runtime,
        promotion_id,
        RollbackRequested,
        "rollback",
        reason=reason,
        requested_by=requested_by or default_actor(),
    )


def request_promote_now(
    runtime: Runtime, promotion_id: str, reason: str, requested_by: str
) -> SentMessage:
    from promotion.commands import PromoteNow

    return _promotion_command(
        runtime, promotion_id, PromoteNow, "promote-now", reason=reason, requested_by=requested_by
    )


def request_pause(
    runtime: Runtime, promotion_id: str, requested_by: str, reason: str = ""
) -> SentMessage:
    from promotion.commands import PausePromotion

    return _promotion_command(
        runtime, promotion_id, PausePromotion, "pause", reason=reason, requested_by=requested_by
    )


def request_resume(
    runtime: Runtime, promotion_id: str, requested_by: str, reason: str = ""
) -> SentMessage:
    from promotion.commands import ResumePromotion

    return _promotion_command(
        runtime, promotion_id, ResumePromotion, "resume", reason=reason, requested_by=requested_by
    )


# --------------------------------------------------------------------------- data


def data_blob_service(
    runtime: Runtime, environ: Mapping[str, str] | None = None
) -> BlobServiceClient:
    """The account the blob trigger watches: the `DataStorage` connection when it is set,
    else the app's own storage. Like devhost, `UseDevelopmentStorage=true` means the same
    Azurite as the app's storage."""
    environ = os.environ if environ is None else environ
    value = environ.get(DATA_CONNECTION, "")
    identity = any(
        environ.get(f"{DATA_CONNECTION}__{suffix}")
        for suffix in ("blobServiceUri", "serviceUri", "accountName")
    )
    if value.strip().lower() == _DEV_STORAGE or not (value or identity):
        return runtime.blob_service
    from devhost.connections import blob_service

    return blob_service(DATA_CONNECTION, environ)


def send_data(
    runtime: Runtime,
    model: str,
    files: Sequence[Path | str],
    *,
    blob_service: BlobServiceClient | None = None,
    environ: Mapping[str, str] | None = None,
) -> DataUpload:
    """Upload files as `<prefix><file name>` into the model's data container (created when
    missing). The blob trigger turns each new blob into a DataLanded command."""
    from adapters.blob_state import ensure_container

    policy = policy_for(runtime, model)
    paths = [Path(file) for file in files]
    if not paths:
        raise BadInput("send-data needs at least one file")
    for path in paths:
        if not path.is_file():
            raise BadInput(f"{path}: no such file")
    environ = os.environ if environ is None else environ
    notes: list[str] = []
    watched = environ.get("DATA_CONTAINER")
    if watched and watched != policy.data.container:
        notes.append(
            f"DATA_CONTAINER is {watched!r} but {model}'s data container is "
            f"{policy.data.container!r}: the blob trigger will not see these files"
        )
    service = blob_service or data_blob_service(runtime, environ)
    container = ensure_container(service.get_container_client(policy.data.container))
    uploaded: list[UploadedBlob] = []
    for path in paths:
        blob_name = f"{policy.data.prefix}{path.name}"
        blob = container.get_blob_client(blob_name)
        with path.open("rb") as stream:
            blob.upload_blob(stream, overwrite=True)
        uploaded.append(
            UploadedBlob(
                file=str(path),
                container=policy.data.container,
                blob_name=blob_name,
                url=blob.url,
                size=path.stat().st_size,
            )
        )
    return DataUpload(model=model, blobs=uploaded, notes=tuple(notes))


# --------------------------------------------------------------------------- status


def model_report(runtime: Runtime, model: str) -> dict[str, Any]:
    """The model's status as the HTTP API gives it, with the dedup keys counted, not listed."""
    from orchestrator.service import UnknownModel

    try:
        status = runtime.orchestrator.model_status(model)
    except UnknownModel:
        policy_for(runtime, model)  # raises BadInput naming the known models
        raise
    retrain = dict(status.get("retrain") or {})
    retrain["seen_keys_count"] = len(retrain.pop("seen_keys", []) or [])
    return status | {"retrain": retrain}


def promotion_report(runtime: Runtime, promotion_id: str) -> dict[str, Any]:
    """The promotion (active or recent) and its audit trail, oldest first."""
    model, promotion = find_promotion(runtime, promotion_id)
    audit = runtime.orchestrator.audit_trail(model, promotion_id)
    return {
        "model": model,
        "promotion": promotion,
        "audit": [record.model_dump(mode="json") for record in audit],
    }


# --------------------------------------------------------------------------- rendering

_OUTCOME_STYLE = {
    "pass": "green",
    "fail": "red",
    "inconclusive": "yellow",
    "completed": "green",
    "rolled_back": "red",
    "rejected": "red",
    "failed": "red",
}


def _when(value: Any) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if moment.utcoffset() is not None else "")


def _styled(text: Any) -> str:
    from rich.markup import escape

    style = _OUTCOME_STYLE.get(str(text))
    return f"[{style}]{escape(str(text))}[/]" if style else escape(str(text))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _evidence_line(evidence: Mapping[str, Any]) -> str:
    from rich.markup import escape

    parts = [f"{escape(str(evidence.get('gate')))} {_styled(evidence.get('outcome'))}"]
    if evidence.get("reason"):
        parts.append(escape(str(evidence["reason"])))
    values = evidence.get("values") or {}
    if values:
        parts.append(", ".join(f"{key}={_number(value)}" for key, value in values.items()))
    samples = evidence.get("samples") or {}
    if samples:
        parts.append("n: " + ", ".join(f"{key}={value}" for key, value in samples.items()))
    if evidence.get("p_value") is not None:
        parts.append(f"p={_number(evidence['p_value'])}")
    return " — ".join(parts)


def _serving(document: Mapping[str, Any] | None) -> str:
    if not document:
        return "none"
    return f"v{document['version']} ({document['deployment']}, since {_when(document['since'])})"


def _key_detail(detail: Mapping[str, Any], limit: int = 100) -> str:
    """The parts of an audit detail a person reads first; big structures are counted."""
    first = ("cause", "reason", "decision", "comment", "version", "traffic", "step", "outcome")
    ordered = [key for key in first if key in detail] + sorted(set(detail) - set(first))
    parts = []
    for key in ordered:
        value = detail[key]
        if value in (None, "", [], {}):
            continue
        if key in ("by", "requested_by", "approver", "caused_by"):  # the actor column
            continue
        if isinstance(value, list) and all(isinstance(v, dict) and "gate" in v for v in value):
            text = ", ".join(f"{v['gate']} {v.get('outcome', '')}".strip() for v in value)
        elif isinstance(value, list):
            text = (
                f"{len(value)} item(s)"
                if any(isinstance(v, dict) for v in value)
                else ", ".join(map(str, value))
            )
        elif isinstance(value, dict):
            text = (
                ", ".join(f"{k}={_number(v)}" for k, v in value.items())
                if all(not isinstance(v, (dict, list)) for v in value.values())
                else f"{len(value)} field(s)"
            )
        else:
            text = _number(value)
        parts.append(f"{key}: {text}")
    line = "; ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _actor(record: Mapping[str, Any]) -> str:
    """Who caused an audit record. A transition keeps its person in `detail.caused_by`
    while the record's `actor` may say "system"; the person is what a reader wants."""
    actor = str(record.get("actor") or "system")
    caused_by = (record.get("detail") or {}).get("caused_by")
    if actor == "system" and caused_by:
        return str(caused_by)
    return actor


def render_model(report: Mapping[str, Any]) -> list[RenderableType]:
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    out: list[RenderableType] = []
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("model", escape(str(report["model"])))
    summary.add_row("production", escape(_serving(report.get("production"))))
    summary.add_row("last known good", escape(_serving(report.get("last_known_good"))))
    queued = report.get("queued_candidates") or []
    if queued:
        summary.add_row("queued", ", ".join(f"v{item['version']}" for item in queued))
    retrain = report.get("retrain") or {}
    job = retrain.get("current_job")
    summary.add_row(
        "training",
        escape(f"{job['run_id']} ({job['status']}, since {_when(job['submitted_at'])})")
        if job
        else "idle",
    )
    pending = retrain.get("pending") or []
    window = retrain.get("window")
    data = f"{len(pending)} item(s) pending"
    if window:
        data += f", window closes {_when(window['closes_at'])}"
    summary.add_row("new data", data)
    if report.get("pending_effects"):
        summary.add_row("pending effects", str(report["pending_effects"]))
    summary.add_row("state version", str(report.get("version")))
    out.append(summary)

    active = report.get("active_promotion")
    if active:
        tree = Tree(
            f"[bold]active promotion[/] {escape(active['id'])} — candidate "
            f"v{escape(str(active['candidate_version']))}"
        )
        state = (
            f"status {_styled(active['status'])}, step {escape(active['step'])}, "
            f"traffic {active.get('traffic_weight', 0)}% on the candidate"
        )
        if active.get("paused"):
            state += f" [yellow]paused by {escape(str(active.get('paused_by')))}[/]"
            if active.get("pause_reason"):
                state += f": {escape(active['pause_reason'])}"
        tree.add(state)
        if active.get("baseline"):
            tree.add(f"baseline {escape(_serving(active['baseline']))}")
        if active.get("status") == "awaiting_approval":
            tree.add(
                f"[yellow]awaiting approval[/] until {_when(active.get('approval_expires_at'))}"
            )
        approval = active.get("approval")
        if approval:
            tree.add(
                f"approval: {_styled(approval['decision'])} by {escape(approval['approver'])}"
                + (f" — {escape(approval['comment'])}" if approval.get("comment") else "")
            )
        if active.get("check_due_at"):
            tree.add(f"next check {_when(active['check_due_at'])}")
        gates = active.get("gates") or []
        if gates:
            gate_branch = tree.add("gates")
            for gate in gates:
                node = gate_branch.add(
                    f"{escape(gate['step'])} {_styled(gate['outcome'])} at {_when(gate['at'])}"
                )
                for evidence in gate.get("evidence") or []:
                    node.add(_evidence_line(evidence))
        out.append(tree)
    else:
        out.append("[dim]no active promotion[/]")

    history = report.get("recent_promotions") or []
    if history:
        table = Table(title="recent promotions", title_justify="left")
        for column in ("promotion", "version", "outcome", "finished", "reason"):
            table.add_column(column)
        for entry in reversed(history[-10:]):
            table.add_row(
                escape(entry["promotion_id"]),
                f"v{escape(str(entry['candidate_version']))}",
                _styled(entry["outcome"]),
                _when(entry.get("finished_at")),
                escape(str(entry.get("reason", ""))),
            )
        out.append(table)
    runs = retrain.get("runs") or []
    if runs:
        table = Table(title="recent training runs", title_justify="left")
        for column in ("run", "status", "version", "ended", "reason"):
            table.add_column(column)
        for run in reversed(runs[-5:]):
            table.add_row(
                escape(run["run_id"]),
                _styled(run["status"]),
                escape(str(run.get("registered_version") or "-")),
                _when(run.get("ended_at")),
                escape(str(run.get("error") or run.get("reason") or "")),
            )
        out.append(table)
    return out


def render_promotion(report: Mapping[str, Any]) -> list[RenderableType]:
    from rich.markup import escape
    from rich.table import Table

    promotion = report["promotion"]
    status = promotion.get("status") or promotion.get("outcome")
    header = (
        f"[bold]{escape(promotion.get('id') or promotion.get('promotion_id', ''))}[/] "
        f"({escape(str(report['model']))}, "
        f"candidate v{escape(str(promotion['candidate_version']))}) — {_styled(status)}"
    )
    if promotion.get("step"):
        header += (
            f", step {escape(promotion['step'])}, traffic {promotion.get('traffic_weight', 0)}%"
        )
    if promotion.get("reason"):
        header += f" — {escape(promotion['reason'])}"
    table = Table(title="audit trail", title_justify="left", expand=True)
    table.add_column("time", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("from → to")
    table.add_column("actor", overflow="fold")
    table.add_column("detail", ratio=1)
    for record in report.get("audit") or []:
        before, after = record.get("from_state"), record.get("to_state")
        transition = f"{before or '-'} → {after or '-'}" if before != after else (after or "-")
        table.add_row(
            _when(record["time"]),
            escape(record["action"]),
            escape(transition),
            escape(_actor(record)),
            escape(_key_detail(record.get("detail") or {})),
        )
    return [header, table]


def render_sent(sent: SentMessage) -> list[RenderableType]:
    from rich.markup import escape

    envelope = sent.envelope
    lines = [
        f"[green]sent[/] {envelope.type} for {escape(envelope.model)} on queue "
        f"{escape(sent.queue)} — message id [bold]{escape(envelope.message_id)}[/]"
    ]
    payload = envelope.payload
    if envelope.type == "ApprovalDecision":
        lines.append(
            f"{payload['decision']} promotion {escape(payload['promotion_id'])}, step "
            f"{escape(payload['step'])}, candidate v{escape(payload['candidate_version'])}, "
            f"as {escape(payload['approver'])}"
        )
        lines.append(
            f"the orchestrator checks {escape(payload['approver'])} against "
            f"{escape(envelope.model)}'s approvers when it handles the message; see "
            f"`status --promotion {escape(payload['promotion_id'])}`"
        )
    elif envelope.type == "RetrainRequested":
        lines.append(f"run id [bold]{escape(payload['run_id'])}[/]")
        lines.append(f"follow it with `status {escape(envelope.model)}`")
    elif envelope.promotion_id:
        lines.append(f"follow it with `status --promotion {escape(envelope.promotion_id)}`")
    lines.extend(f"[yellow]note:[/] {escape(note)}" for note in sent.notes)
    return lines


def render_upload(upload: DataUpload) -> list[RenderableType]:
    from rich.markup import escape

    lines: list[RenderableType] = [
        f"[green]uploaded[/] {len(upload.blobs)} file(s) for {escape(upload.model)}:"
    ]
    lines.extend(f"  {escape(blob.url)}" for blob in upload.blobs)
    lines.extend(f"[yellow]note:[/] {escape(note)}" for note in upload.notes)
    lines.append(f"the blob trigger picks them up; follow it with `status {escape(upload.model)}`")
    return lines


# --------------------------------------------------------------------------- argparse


class _Parser(argparse.ArgumentParser):
    """Bad arguments raise BadInput (one line, exit 2) instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings",
        type=Path,
        default=argparse.SUPPRESS,
        help=SETTINGS_HELP,
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )

    parser = _Parser(
        prog=PROG,
        description="What a person does with retrain-orchestrator: approve, retrain, roll "
        "back, inspect. Commands are sent on the app's queues; the running app handles them.",
    )
    parser.add_argument("--settings", type=Path, default=None, help=SETTINGS_HELP)
    parser.add_argument(
        "--json", action="store_true", default=False, help="machine-readable output"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    for decision in ("approve", "reject"):
        sub = add(
            decision, f"{decision} a promotion awaiting approval (sent on the approvals queue)"
        )
        sub.add_argument("promotion_id", metavar="PROMOTION_ID")
        sub.add_argument("--as", dest="actor", required=True, metavar="APPROVER",
                         help="who answers; must be one of the model's approvers")  # fmt: skip
        sub.add_argument("--comment", default="")
        sub.add_argument("--step", help="the step answered (default: the promotion's current step)")
        sub.add_argument("--version", help="the candidate version (default: the promotion's)")

    sub = add("retrain", "ask for a training run now (RetrainRequested on the orchestrator queue)")
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("--data-uri", help="train on this data (default: the data pending)")
    sub.add_argument("--reason", default="manual")
    sub.add_argument("--force", action="store_true", help="skip the minimum of new data")
    sub.add_argument("--as", dest="actor", metavar="WHO", help="who asks (default: cli:<user>)")

    sub = add("rollback", "roll a promotion back to the last known-good model")
    sub.add_argument("promotion_id", metavar="PROMOTION_ID")
    sub.add_argument("--reason", required=True)
    sub.add_argument("--as", dest="actor", metavar="WHO", help="who asks (default: cli:<user>)")

    sub = add("promote-now", "skip the remaining canary steps: 100%% on the candidate")
    sub.add_argument("promotion_id", metavar="PROMOTION_ID")
    sub.add_argument("--as", dest="actor", required=True, metavar="WHO")
    sub.add_argument("--reason", required=True)

    for name, help_text in (
        ("pause", "hold a promotion where it is (no further traffic steps)"),
        ("resume", "resume a paused promotion"),
    ):
        sub = add(name, help_text)
        sub.add_argument("promotion_id", metavar="PROMOTION_ID")
        sub.add_argument("--as", dest="actor", required=True, metavar="WHO")
        sub.add_argument("--reason", default="")

    sub = add("status", "a model's state, or a promotion's audit trail")
    sub.add_argument("model", metavar="MODEL", nargs="?")
    sub.add_argument("--promotion", metavar="PROMOTION_ID")

    sub = add("send-data", "upload data files where the model's blob trigger watches")
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("files", metavar="FILE", nargs="+", type=Path)
    return parser


def load_cli_settings(path: Path | None) -> None:
    """Export a local.settings.json's Values into the environment (a variable already set
    wins, as with `func start`)."""
    if path is None:
        return
    from devhost.settings import DevHostError, apply_settings, load_local_settings

    if not path.is_file():
        raise BadInput(f"{path}: no such settings file")
    try:
        apply_settings(load_local_settings(path))
    except DevHostError as exc:
        raise BadInput(str(exc)) from exc


def runtime_from_environment() -> Runtime:
    from orchestrator.bootstrap import Runtime
    from orchestrator.settings import SettingsError, load_settings

    try:
        return Runtime(load_settings())
    except SettingsError as exc:
        raise BadInput(str(exc)) from exc


def _run(arguments: argparse.Namespace, runtime: Runtime) -> tuple[Any, list[RenderableType]]:
    """Run one parsed command: (its JSON document, its rich renderables)."""
    command = arguments.command
    if command in ("approve", "reject"):
        sent = send_approval(
            runtime,
            arguments.promotion_id,
            command,
            arguments.actor,
            comment=arguments.comment,
            step=arguments.step,
            candidate_version=arguments.version,
        )
        return sent.to_json(), render_sent(sent)
    if command == "retrain":
        sent = request_retrain(
            runtime,
            arguments.model,
            data_uri=arguments.data_uri,
            reason=arguments.reason,
            force=arguments.force,
            requested_by=arguments.actor,
        )
        return sent.to_json() | {"run_id": sent.envelope.payload["run_id"]}, render_sent(sent)
    if command == "send-data":
        upload = send_data(runtime, arguments.model, arguments.files)
        return upload.to_json(), render_upload(upload)
    if command == "status":
        if arguments.promotion:
            report = promotion_report(runtime, arguments.promotion)
            return report, render_promotion(report)
        report = model_report(runtime, arguments.model)
        return report, render_model(report)
    senders: dict[str, Callable[[], SentMessage]] = {
        "rollback": lambda: request_rollback(
            runtime, arguments.promotion_id, arguments.reason, arguments.actor
        ),
        "promote-now": lambda: request_promote_now(
            runtime, arguments.promotion_id, arguments.reason, arguments.actor
        ),
        "pause": lambda: request_pause(
            runtime, arguments.promotion_id, arguments.actor, arguments.reason
        ),
        "resume": lambda: request_resume(
            runtime, arguments.promotion_id, arguments.actor, arguments.reason
        ),
    }
    sent = senders[command]()
    return sent.to_json(), render_sent(sent)


def _check_arguments(arguments: argparse.Namespace) -> None:
    """What argparse cannot say: checked before any settings are read."""
    if arguments.command == "status" and bool(arguments.model) == bool(arguments.promotion):
        raise BadInput("status needs a MODEL or --promotion PROMOTION_ID (one of them)")
    actor = getattr(arguments, "actor", None)
    if actor is not None and not actor.strip():
        raise BadInput("--as must name who you are")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def main(argv: list[str] | None = None, *, runtime: Runtime | None = None) -> int:
    """Run one command. `runtime` replaces the one built from the settings (tests)."""
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:  # piped: do not squeeze to 80
        out = Console(highlight=False, width=PIPED_WIDTH)
    err = Console(stderr=True, highlight=False)
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        try:
            arguments = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        as_json = arguments.json
        _check_arguments(arguments)
        if runtime is None:
            load_cli_settings(arguments.settings)
            runtime = runtime_from_environment()
        document, renderables = _run(arguments, runtime)
    except CliError as exc:
        _report_error(err, _one_line(exc), exc.exit_code, as_json)
        return exc.exit_code
    except Exception as exc:  # Azure, network, policy files: one line, exit 1
        from orchestrator.policy import PolicyError

        code = 2 if isinstance(exc, PolicyError) else 1
        _report_error(err, f"{type(exc).__name__}: {_one_line(exc)}", code, as_json)
        return code
    if as_json:
        print(json.dumps(document, indent=2, default=str))
    else:
        for renderable in renderables:
            out.print(renderable, soft_wrap=isinstance(renderable, str))
    return 0


def _report_error(err: Console, message: str, code: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}), file=sys.stderr)
    else:
        from rich.markup import escape

        err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
