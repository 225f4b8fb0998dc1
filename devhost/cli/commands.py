"""What each CLI command does, as small functions taking a Runtime: build the command, send
it as an envelope on the app's queue (`send_approval`, `request_retrain`, `request_rollback`,
`request_promote_now`, `request_pause`, `request_resume`), upload data where the blob trigger
watches (`send_data`), read state, runs and audit back (`model_report`, `runs_report`,
`audit_report`, `promotion_report`: a page at a time, or every page).

Nothing here parses arguments or prints: devhost/cli/main.py does, with devhost/cli/render.py.
"""

from __future__ import annotations

import getpass
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from orchestrator.messages import Envelope
from orchestrator.people import PERSON_COMMANDS

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from domain.policy import ModelPolicy
    from orchestrator.bootstrap import Runtime

DATA_CONNECTION = "DataStorage"  # the connection the blob trigger reads (triggers/data.py)
_DEV_STORAGE = "usedevelopmentstorage=true"


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
    etag: str | None = None  # the version written (what a BlobCreated event names)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "container": self.container,
            "blob": self.blob_name,
            "url": self.url,
            "size": self.size,
            "etag": self.etag,
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
    found = runtime.queries.find_promotion(promotion_id)
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
    notes = list(notes)
    if envelope.type in PERSON_COMMANDS:
        envelope = signed_in(runtime, envelope, notes)
    runtime.bus_for(queue).send(envelope)
    return SentMessage(queue=queue, envelope=envelope, notes=tuple(notes))


def signed_in(runtime: Runtime, envelope: Envelope, notes: list[str]) -> Envelope:
    """A person's command with the sender's bearer token, which the app verifies
    (orchestrator/people.py): who the person is comes from the token, not the payload.

    Azure (ENTRA_TENANT_ID set): a token for the API app from the app's one credential
    (`az login` on a laptop). Locally: a token the local issuer mints for whoever `--as` names
    (the payload's approver or requester), holding the app role the command needs, as if an
    Entra ID admin had assigned it; an approval's holds none (the model's approvers decide).
    """
    settings = runtime.settings
    audience = settings.api_audiences[0]
    if settings.entra_tenant_id:
        import jwt

        from adapters.azure_credential import azure_credential

        scope = f"{audience}/.default"
        try:
            token = azure_credential().get_token(scope).token
        except Exception as exc:  # no az login, no consent, no network: one line
            raise CliError(
                f"no token for {scope}: {_first_line(exc)} (run `az login`; the API app must "
                "pre-authorize the Azure CLI, see README, Who can move a promotion)"
            ) from exc
        claims = jwt.decode(token, options={"verify_signature": False})
        signed_as = claims.get("preferred_username") or claims.get("upn") or claims.get("oid")
        notes.append(f"signed in as {signed_as} (your Azure credential): the app records that")
        return envelope.model_copy(update={"auth": token})
    from adapters.local_issuer import LocalIssuer

    who = str(envelope.payload.get("approver") or envelope.payload.get("requested_by"))
    roles = () if envelope.type == "ApprovalDecision" else (PERSON_COMMANDS[envelope.type],)
    token = LocalIssuer(settings.local_issuer_dir).mint(who, roles=roles, audience=audience)
    return envelope.model_copy(update={"auth": token})


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


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
    from retrain.commands import RetrainRequested

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
    from devhost.host.connections import blob_service

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
    # A policy whose data container the app does not watch never gets here: loading the
    # policies refuses it (orchestrator/policy_files.py), as the app does at start.
    service = blob_service or data_blob_service(runtime, environ)
    container = ensure_container(service.get_container_client(policy.data.container))
    uploaded: list[UploadedBlob] = []
    for path in paths:
        blob_name = f"{policy.data.prefix}{path.name}"
        blob = container.get_blob_client(blob_name)
        with path.open("rb") as stream:
            written = blob.upload_blob(stream, overwrite=True)
        uploaded.append(
            UploadedBlob(
                file=str(path),
                container=policy.data.container,
                blob_name=blob_name,
                url=blob.url,
                size=path.stat().st_size,
                etag=written.get("etag"),
            )
        )
    return DataUpload(model=model, blobs=uploaded)


# --------------------------------------------------------------------------- status


def model_report(runtime: Runtime, model: str) -> dict[str, Any]:
    """The model's status as GET /api/models/{model} gives it: bounded, no data keys."""
    from orchestrator.policy_files import UnknownModel

    try:
        return runtime.queries.model_status(model)
    except UnknownModel:
        policy_for(runtime, model)  # raises BadInput naming the known models
        raise


def _pages(
    read: Callable[[str | None], tuple[list[Any], str | None]],
    continuation: str | None,
    all_pages: bool,
) -> tuple[list[Any], str | None]:
    """One page from `continuation`, or (`all_pages`) every page from there on."""
    from orchestrator.ports import InvalidContinuation

    items: list[Any] = []
    try:
        while True:
            page, continuation = read(continuation)
            items.extend(page)
            if continuation is None or not all_pages:
                return items, continuation
    except InvalidContinuation as exc:
        raise BadInput(f"--continuation: {exc.reason}") from exc


def audit_report(
    runtime: Runtime,
    model: str,
    *,
    promotion_id: str | None = None,
    limit: int = 100,
    continuation: str | None = None,
    all_pages: bool = False,
) -> dict[str, Any]:
    """A page of the model's (or one promotion's) audit, oldest first, as
    GET /api/models/{model}/audit gives it; `all_pages` follows the tokens to the end."""
    policy_for(runtime, model)

    def read(token: str | None) -> tuple[list[Any], str | None]:
        page = runtime.queries.audit(model, promotion_id, limit=limit, continuation=token)
        return [record.model_dump(mode="json") for record in page.records], page.continuation

    records, continuation = _pages(read, continuation, all_pages)
    return {
        "model": model,
        "promotion_id": promotion_id,
        "records": records,
        "continuation": continuation,
    }


def runs_report(
    runtime: Runtime,
    model: str,
    *,
    limit: int = 100,
    continuation: str | None = None,
    all_pages: bool = False,
) -> dict[str, Any]:
    """A page of the model's ended runs, oldest first, as GET /api/models/{model}/runs
    gives it; `all_pages` follows the tokens to the end."""
    policy_for(runtime, model)

    def read(token: str | None) -> tuple[list[Any], str | None]:
        return runtime.queries.runs(model, limit=limit, continuation=token)

    runs, continuation = _pages(read, continuation, all_pages)
    return {"model": model, "runs": runs, "continuation": continuation}


def promotion_report(
    runtime: Runtime, promotion_id: str, *, limit: int = 100, all_pages: bool = False
) -> dict[str, Any]:
    """The promotion (active or recent) and the first page of its audit trail, oldest first
    (`all_pages`: all of it), as GET /api/promotions/{id} gives it."""
    model, promotion = find_promotion(runtime, promotion_id)
    audit = audit_report(
        runtime, model, promotion_id=promotion_id, limit=limit, all_pages=all_pages
    )
    return {
        "model": model,
        "promotion": promotion,
        "audit": audit["records"],
        "continuation": audit["continuation"],
    }
