"""Binding payloads -> commands. Pure parsing, shared by the triggers and their tests.

Event Hubs events come in two documented shapes:

- a data-ready event from an upstream producer:
  `{"model": "churn", "data_uri": "https://.../data/churn/2026-11-22.csv", "rows": 1200,
    "event_id": "producer-42"}`
- an Event Grid `Microsoft.Storage.BlobCreated` event routed through Event Hubs (one event,
  or an array of them), which is matched to a model by its policy's container and prefix.

Every data URI must be a blob of the data account under the model's prefix
(`domain.data_location.check_data_uri`); an Event Grid event's `data.url` must also name the
blob its `subject` names. Anything else is a BadPayload (a dead letter) naming the field.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.data_location import (
    DataAccount,
    DataBlob,
    DataLocationRefused,
    locate_data_uri,
    redact_uri,
)
from domain.policy import ModelPolicy
from retrain.commands import DataItem
from retrain.job_events import TrainingJobEvent

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
log = logging.getLogger(__name__)


class BadPayload(ValueError):
    """A payload that can never be turned into a command; `reason` names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataReadyEvent(_Strict):
    model: str = Field(min_length=1, max_length=100)
    data_uri: str = Field(min_length=1, max_length=2000)
    rows: int | None = Field(default=None, ge=0)
    event_id: str = Field(min_length=1, max_length=200)


class BlobCreatedData(BaseModel):
    url: str
    eTag: str | None = None  # Event Grid's own field names
    contentLength: int | None = None
    api: str | None = None  # PutBlob, PutBlockList, CopyBlob, FlushWithClose, CreateFile...


class EventGridEvent(BaseModel):
    id: str
    eventType: str
    subject: str
    data: BlobCreatedData


class RetrainBody(_Strict):
    """POST /api/retrain."""

    model: str = Field(min_length=1, max_length=100)
    data_uri: str | None = Field(default=None, min_length=1, max_length=2000)
    reason: str = Field(default="manual request", max_length=500)
    force: bool = False


class RollbackBody(_Strict):
    """POST /api/promotions/{id}/rollback."""

    reason: str = Field(min_length=1, max_length=500)


class ApprovalBody(_Strict):
    """POST /api/promotions/{id}/approval: the step and version the person saw, so an answer
    never applies to a later step or another candidate."""

    decision: Literal["approve", "reject"]
    step: str = Field(min_length=1, max_length=100)
    candidate_version: str = Field(min_length=1, max_length=100)
    comment: str = Field(default="", max_length=500)


class PromoteNowBody(_Strict):
    """POST /api/promotions/{id}/promote-now."""

    reason: str = Field(min_length=1, max_length=500)


class PauseResumeBody(_Strict):
    """POST /api/promotions/{id}/pause and /resume."""

    reason: str = Field(default="", max_length=500)


SIGN_IN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._%+'-]*(@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?$"


class SignInBody(_Strict):
    """POST /api/dashboard/sign-in (local issuer only): who to mint a token for."""

    # A UPN (or a bare account name): ASCII letters, digits and . _ % + ' - around one @; no
    # spaces, control or bidi characters, nor markup, since the name is shown to other people.
    name: str = Field(min_length=1, max_length=200, pattern=SIGN_IN_NAME_PATTERN)


PROMOTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
DEFAULT_PAGE = 100
MAX_PAGE = 1000  # orchestrator.ports.MAX_AUDIT_PAGE
# Query parameters the host reads itself: the function key (`code`).
HOST_QUERY_PARAMETERS = frozenset({"code"})


class PageQuery(_Strict):
    """?limit=&continuation= of a paged resource (GET /api/models/{model}/runs)."""

    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    continuation: str | None = Field(default=None, min_length=1, max_length=4000)


class AuditQuery(PageQuery):
    """GET /api/models/{model}/audit: also ?promotion= (that promotion's records only)."""

    promotion: str | None = Field(default=None, pattern=PROMOTION_ID_PATTERN)


def parse_query(params: Mapping[str, str], schema: type[PageQuery]) -> Any:
    """A query string, strictly: unknown parameters are refused, `limit` is digits only."""
    values: dict[str, Any] = {
        name: value for name, value in params.items() if name not in HOST_QUERY_PARAMETERS
    }
    limit = values.get("limit")
    if limit is not None:
        if not (isinstance(limit, str) and limit.isascii() and limit.isdigit() and len(limit) < 6):
            raise BadPayload(f"limit: a whole number from 1 to {MAX_PAGE}, not {limit[:20]!r}")
        values["limit"] = int(limit)
    try:
        return schema.model_validate(values, strict=True)
    except ValidationError as exc:
        raise BadPayload(describe(exc)) from exc


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def parse_json_body(body: bytes, schema: type[BaseModel]) -> Any:
    if not body:
        raise BadPayload("body: a JSON object is required")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, UnicodeDecodeError, and an integer literal longer
        # than Python's int digit limit; RecursionError: nesting deeper than the parser goes.
        raise BadPayload(f"body: not valid JSON ({_short(exc)})") from exc
    if not isinstance(document, dict):
        raise BadPayload("body: expected a JSON object")
    try:
        # Strict: no coercion ("yes" is not true, "3" is not 3): a typo is a 400, not a guess.
        return schema.model_validate(document, strict=True)
    except ValidationError as exc:
        raise BadPayload(describe(exc)) from exc


def policy_for_blob(
    policies: Mapping[str, ModelPolicy], container: str, blob_path: str
) -> ModelPolicy | None:
    """The model whose data container and prefix hold this blob; the longest prefix wins."""
    matches = [
        policy
        for policy in policies.values()
        if policy.data.container == container and blob_path.startswith(policy.data.prefix)
    ]
    return max(matches, key=lambda policy: len(policy.data.prefix), default=None)


def split_blob_name(name: str) -> tuple[str, str]:
    """'container/path/to/blob' -> ('container', 'path/to/blob')."""
    container, _, path = name.partition("/")
    if not container or not path:
        raise BadPayload(f"blob name {name!r} is not <container>/<path>")
    return container, path


def checked_uri(
    uri: str, policy: ModelPolicy, data_account: DataAccount | str | None, field: str
) -> str:
    """`uri` normalized, if the policy allows it (see the module); else BadPayload naming
    `field`. No data account (None): nothing is allowed."""
    return _located(uri, policy, data_account, field).uri


def _located(
    uri: str, policy: ModelPolicy, data_account: DataAccount | str | None, field: str
) -> DataBlob:
    if data_account is None:
        raise BadPayload(f"{field}: no data account is configured to take data from")
    try:
        return locate_data_uri(uri, policy, data_account)
    except DataLocationRefused as exc:
        raise BadPayload(f"{field}: {exc.reason}") from exc


def blob_item(name: str, uri: str | None, etag: str | None, length: int | None) -> DataItem:
    """A data item for a blob: blob name + ETag is the deduplication key."""
    version = etag.strip('"') if etag else f"length-{length}"
    return DataItem(uri=uri or name, key=f"blob:{name}@{version}")


@dataclass(frozen=True)
class NotData:
    """A valid event that is no model's data: `reason` says why (logged, not dead-lettered)."""

    blob: str
    reason: str
    unmatched: bool  # under no model's prefix (else: a file not written yet)


# On an account with a hierarchical namespace a file's creation raises BlobCreated twice: at
# CreateFile (still empty) and at FlushWithClose (written). Only the second is data.
_NOT_WRITTEN_YET = frozenset({"CreateFile"})


def blob_created(
    event: EventGridEvent,
    policies: Mapping[str, ModelPolicy],
    data_account: DataAccount | str | None,
) -> tuple[str, DataItem] | NotData:
    """A BlobCreated event -> (model, item); NotData for a blob under no model's prefix or a
    file not written yet; BadPayload for an event that is not a blob's or names another URL."""
    if event.eventType != BLOB_CREATED:
        raise BadPayload(f"eventType {event.eventType!r} is not {BLOB_CREATED}")
    marker = "/containers/"
    if marker not in event.subject or "/blobs/" not in event.subject:
        raise BadPayload(f"subject {event.subject!r} does not name a blob")
    container, _, path = event.subject.split(marker, 1)[1].partition("/blobs/")
    # The subject holds the name as written; some producers percent-encode it: either reading
    # is taken, the URL must then name the same blob.
    readings = list(dict.fromkeys([path, unquote(path)]))
    name = f"{container}/{readings[-1]}"
    if event.data.api in _NOT_WRITTEN_YET:
        return NotData(
            name, f"{event.data.api}: the file is not written yet (FlushWithClose is)", False
        )
    url = event.data.url
    policies_of = {reading: policy_for_blob(policies, container, reading) for reading in readings}
    for reading in readings:
        canonical = _event_url(url, container, reading)
        if canonical is None:
            continue  # the URL names another reading of the subject (or another blob)
        policy = policies_of[reading]
        if policy is None:
            break
        blob = _located(canonical, policy, data_account, "data.url")
        return policy.model, blob_item(f"{container}/{reading}", blob.uri, event.data.eTag, None)
    else:
        if any(policies_of.values()):
            raise BadPayload(f"data.url: {redact_uri(url)!r} is not the subject's blob {name!r}")
    known = sorted({f"{p.data.container}/{p.data.prefix}" for p in policies.values()})
    return NotData(name, f"under no model's data prefix (watched: {', '.join(known)})", True)


def _event_url(url: str, container: str, path: str) -> str | None:
    """An event's `url`, percent-encoded as the data policy reads URLs, when it names the blob
    `container/path`; None when it names another. Event Grid may send the name unencoded
    (spaces, '#', non-ASCII), and an account with a hierarchical namespace sends its `dfs`
    endpoint: the blob endpoint is the same account's."""
    scheme, separator, rest = url.partition("://")
    host, _, raw_path = rest.partition("/")
    if not separator or not host:
        return None
    host = host.replace(".dfs.core.windows.net", ".blob.core.windows.net")
    wanted = f"{container}/{path}"
    without_query, mark, query = raw_path.partition("?")
    # A query is kept for the policy to refuse (a SAS token is named as such).
    for candidate, suffix in ((raw_path, ""), (without_query, f"{mark}{query}")):
        for decoded in dict.fromkeys([candidate, unquote(candidate)]):
            if not decoded.endswith(wanted):
                continue
            account = decoded[: len(decoded) - len(wanted)]  # Azurite's "devstoreaccount1/"
            if account and (not account.endswith("/") or "/" in account[:-1]):
                continue
            encoded = f"{quote(account)}{quote(container)}/{quote(path, safe='/')}"
            return f"{scheme}://{host}/{encoded}{suffix}"
    return None


def parse_grid_event(entry: Mapping[str, Any]) -> EventGridEvent:
    try:
        return EventGridEvent.model_validate(entry, strict=True)
    except ValidationError as exc:
        raise BadPayload(f"Event Grid event: {describe(exc)}") from exc


def parse_event(
    body: bytes,
    policies: Mapping[str, ModelPolicy],
    data_account: DataAccount | str | None = None,
) -> list[tuple[str, DataItem]]:
    """One Event Hubs event -> (model, data item) pairs. Raises BadPayload with the reason.
    Data URIs must be blobs of `data_account` (None: no data URI is accepted)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # see parse_json_body
        raise BadPayload(f"event body is not JSON: {_short(exc)}") from exc
    documents = document if isinstance(document, list) else [document]
    if not documents:
        raise BadPayload("event body is an empty array")
    items: list[tuple[str, DataItem]] = []
    for entry in documents:
        if not isinstance(entry, dict):
            raise BadPayload("event body must be a JSON object or an array of objects")
        if is_run_event(entry):
            continue  # no data: a training run's status, taken by `run_events_in`
        if "eventType" in entry:
            found = blob_created(parse_grid_event(entry), policies, data_account)
            if isinstance(found, NotData):
                # As on the webhook: a subscription sends every blob of the container; one
                # under no prefix (or not written yet) is no one's data, not a bad event.
                log_ignored_once(found)
                continue
            items.append(found)
            continue
        try:
            ready = DataReadyEvent.model_validate(entry, strict=True)
        except ValidationError as exc:
            raise BadPayload(f"data-ready event: {describe(exc)}") from exc
        if ready.model not in policies:
            raise BadPayload(f"model: unknown model {ready.model!r}")
        uri = checked_uri(ready.data_uri, policies[ready.model], data_account, "data_uri")
        items.append(
            (ready.model, DataItem(uri=uri, key=f"event:{ready.event_id}", rows=ready.rows))
        )
    return items


_ignored: OrderedDict[str, None] = OrderedDict()  # blobs already explained (redeliveries)
_IGNORED_KEPT = 10_000
_ignored_lock = threading.Lock()


def log_ignored_once(found: NotData) -> None:
    """Say once per blob why it is no one's data (a warning when it is under no model's
    prefix), however often its event is delivered again; the last 10,000 blobs are kept."""
    with _ignored_lock:
        if found.blob in _ignored:
            return
        _ignored[found.blob] = None
        if len(_ignored) > _IGNORED_KEPT:
            _ignored.popitem(last=False)
    level = logging.WARNING if found.unmatched else logging.INFO
    log.log(level, "blob %s ignored: %s", found.blob, found.reason)


def group_by_model(pairs: Iterable[tuple[str, DataItem]]) -> dict[str, list[DataItem]]:
    grouped: dict[str, list[DataItem]] = {}
    for model, item in pairs:
        grouped.setdefault(model, []).append(item)
    return grouped


# --------------------------------------------------------------------------- Azure ML run events

RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_EVENT_TYPES = frozenset({RUN_STATUS_CHANGED, RUN_COMPLETED})
_RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class RunEventData(BaseModel):
    """`data` of an Azure ML run event (Event Grid schema). Fields Azure ML may add later are
    ignored; those read are typed strictly."""

    experimentId: str | None = None
    experimentName: str = Field(min_length=1, max_length=256)
    runId: str = Field(min_length=1, max_length=256, pattern=_RUN_ID)
    runType: str | None = None
    runStatus: str | None = Field(default=None, min_length=1, max_length=64)
    runTags: dict[str, Any] | None = None
    runProperties: dict[str, Any] | None = None


class RunEvent(BaseModel):
    """`Microsoft.MachineLearningServices.RunStatusChanged` or `.RunCompleted`."""

    id: str = Field(min_length=1, max_length=200)
    eventType: Literal[
        "Microsoft.MachineLearningServices.RunStatusChanged",
        "Microsoft.MachineLearningServices.RunCompleted",
    ]
    subject: str = Field(max_length=1000)  # experiments/{experimentId}/runs/{runId}
    data: RunEventData


def is_run_event(entry: object) -> bool:
    """Whether a JSON document says it is an Azure ML run event (then parsed strictly)."""
    if not isinstance(entry, dict):
        return False
    event_type = entry.get("eventType")  # may be any JSON: a list is not hashable
    return isinstance(event_type, str) and event_type in RUN_EVENT_TYPES


def parse_run_event(entry: Mapping[str, Any]) -> RunEvent:
    """An Azure ML run event, strictly; BadPayload naming the field otherwise."""
    try:
        event = RunEvent.model_validate(entry, strict=True)
    except ValidationError as exc:
        raise BadPayload(f"Azure ML run event: {describe(exc)}") from exc
    if event.eventType == RUN_STATUS_CHANGED and event.data.runStatus is None:
        raise BadPayload("Azure ML run event: data.runStatus: required for RunStatusChanged")
    if not event.subject.endswith(f"/runs/{event.data.runId}"):
        raise BadPayload(
            f"Azure ML run event: subject {event.subject[:200]!r} is not run {event.data.runId!r}"
        )
    return event


# The tag an Azure ML model monitor's run carries when a signal breached its threshold.
MONITOR_BREACH_TAG = "azureml_modelmonitor_threshold_breached"


def monitor_breach(event: RunEvent) -> str | None:
    """The breach message an Azure ML model monitor's run event carries, else None."""
    tags = event.data.runTags or {}
    message = next((v for k, v in tags.items() if k.casefold() == MONITOR_BREACH_TAG), None)
    if not isinstance(message, str) or not message.strip():
        return None
    return message.strip()[:500]


def monitored_by(event: RunEvent, policies: Mapping[str, ModelPolicy]) -> list[str]:
    """The models whose policy listens to the Azure ML model monitor behind the event."""
    experiment = event.data.experimentName
    return [
        p.model
        for p in policies.values()
        if p.monitor is not None and p.monitor.azureml_monitor_experiment == experiment
    ]


def experiment_of(policy: ModelPolicy) -> str:
    """The Azure ML experiment a model's training runs are submitted under (the outbox's)."""
    return policy.pipeline.experiment or f"{policy.model}-retrain"


def run_event_commands(
    event: RunEvent, policies: Mapping[str, ModelPolicy]
) -> list[tuple[str, TrainingJobEvent]]:
    """(model, TrainingJobEvent) for each model training under the event's experiment; [] for
    an experiment no model uses (the workspace runs other things: logged, not dead-lettered)."""
    kind = "RunCompleted" if event.eventType == RUN_COMPLETED else "RunStatusChanged"
    command = TrainingJobEvent(
        run_id=event.data.runId,
        run_status=event.data.runStatus or "Completed",  # RunCompleted: completed by definition
        event_id=event.id,
        event_type=kind,
    )
    experiment = event.data.experimentName
    return [(p.model, command) for p in policies.values() if experiment_of(p) == experiment]


def run_events_in(body: bytes | str) -> list[RunEvent]:
    """The Azure ML run events in one Event Hubs event's body ([] when it holds none). Raises
    BadPayload for a malformed one (the whole event is then dead-lettered)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # see parse_json_body
        raise BadPayload(f"event body is not JSON: {_short(exc)}") from exc
    documents = document if isinstance(document, list) else [document]
    return [parse_run_event(entry) for entry in documents if is_run_event(entry)]
