"""The one versioned envelope every message shares, and its typed parse error.

Commands and events are plain data: the envelope names the type, the payload is validated
by the handler that owns that type (`Envelope.payload_as`).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

ENVELOPE_SCHEMA_VERSION = 1

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class InvalidMessage(ValueError):
    """A message that can never be handled. `reason` is fit for a dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = ENVELOPE_SCHEMA_VERSION
    type: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9_.]*$")
    message_id: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    promotion_id: str | None = Field(default=None, max_length=128)
    # The aggregate version the sender saw; a handler may use it to spot stale messages.
    aggregate_version: int | None = Field(default=None, ge=0)
    time: AwareDatetime
    payload: dict[str, Any] = Field(default_factory=dict)
    # A person's command: the sender's bearer token (orchestrator/people.py verifies it).
    auth: str | None = Field(default=None, min_length=1, max_length=8192)
    # HMAC-SHA256 over the rest of the envelope: set on the app's own messages
    # (orchestrator/signing.py), required on internal types.
    mac: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # W3C trace context of the span that sent it (orchestrator/telemetry.py): the handler's
    # span continues that trace. Left out of the bytes when unset, so envelopes without it
    # read (and verify) as before.
    traceparent: str | None = Field(
        default=None, pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
    )

    @classmethod
    def new(
        cls,
        type: str,
        model: str,
        payload: BaseModel | dict[str, Any] | None = None,
        *,
        message_id: str | None = None,
        promotion_id: str | None = None,
        aggregate_version: int | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        return cls(
            type=type,
            message_id=message_id or uuid.uuid4().hex,
            model=model,
            promotion_id=promotion_id,
            aggregate_version=aggregate_version,
            time=time or datetime.now(UTC),
            payload=body or {},
        )

    def to_bytes(self) -> bytes:
        return self.to_json().encode()

    def to_json(self) -> str:
        return self.model_dump_json(exclude=self._unset())

    def to_document(self) -> dict[str, Any]:
        """The envelope as JSON values, without the optional fields left unset: an instance
        still on the previous version (extra fields forbidden) reads it during a deploy."""
        return self.model_dump(mode="json", exclude=self._unset())

    def _unset(self) -> set[str] | None:
        return _UNSET_OPTIONAL if self.traceparent is None else None

    def payload_as(self, payload_type: type[PayloadT]) -> PayloadT:
        """The payload as `payload_type`, strictly: no coercion of strings to numbers or
        booleans (JSON mode, so timestamps are ISO 8601 strings as JSON carries them)."""
        try:
            return payload_type.model_validate_json(json.dumps(self.payload), strict=True)
        except ValidationError as exc:
            raise InvalidMessage(f"{self.type} payload is invalid: {_describe(exc)}") from exc


_UNSET_OPTIONAL = {"traceparent"}


def parse_envelope(data: bytes | str | dict[str, Any]) -> Envelope:
    """Parse raw bytes (or a decoded dict) into an Envelope, or raise InvalidMessage."""
    if isinstance(data, dict):
        document: Any = data
    else:
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidMessage(f"body is not UTF-8: {exc.reason}") from exc
        if not data.strip():
            raise InvalidMessage("body is empty")
        try:
            document = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InvalidMessage(f"body is not JSON: {exc.msg} at position {exc.pos}") from exc
    if not isinstance(document, dict):
        raise InvalidMessage(f"body is JSON {type(document).__name__}, expected an object")
    version = document.get("schema_version", ENVELOPE_SCHEMA_VERSION)
    if version != ENVELOPE_SCHEMA_VERSION:
        raise InvalidMessage(
            f"schema_version {version!r} is not supported (expected {ENVELOPE_SCHEMA_VERSION})"
        )
    try:
        # Strict, in JSON mode: "3" is not a version number, but an ISO 8601 time is a time.
        return Envelope.model_validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        raise InvalidMessage(f"not a valid envelope: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
