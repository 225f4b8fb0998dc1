"""The MAC on the app's own messages: only the app can send itself a command.

Every message the app sends to itself (gate checks, approval timeouts, deployment and training
checks and results, window closes, promotion starts) carries an HMAC-SHA256 over its canonical
envelope, under a key only the app holds (MESSAGE_SIGNING_KEY: a Key Vault reference in Azure;
generated into `.local/` locally). An internal type without a valid MAC changes nothing.

Transport ids are keyed too (`keyed_id`, used by the Service Bus adapter): a message's id on the
queue is its readable id plus a MAC of it, so nobody can guess the id of a check the app will
schedule and, with duplicate detection on the queue, pre-empt the real one by sending a forged
message under that id first. A forged message is never remembered as seen either, so it cannot
make the real one a duplicate in our own state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from orchestrator.messages import Envelope

# Message types only the app sends (to itself). A person's commands and data events are not
# here: those are trusted through a verified identity or the data policy instead.
INTERNAL_TYPES = frozenset(
    {
        "RetrainWindowClosed",
        "TrainingJobCheck",
        "TrainingJobStatus",
        "StartPromotion",
        "GateCheck",
        "ApprovalTimedOut",
        "DeploymentReady",
        "DeploymentFailed",
        "DeploymentCheck",
        "EndpointDrift",
        "EndpointInSync",
    }
)

ID_MAC_LENGTH = 20  # hex characters of the MAC appended to an internal message's id


class MessageSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the message signing key must be at least 32 bytes")
        self._key = key

    def keyed_id(self, message_id: str) -> str:
        """`message_id` made unguessable and still deterministic (a re-send keeps its id)."""
        tag = hmac.new(self._key, b"id\0" + message_id.encode(), hashlib.sha256).hexdigest()
        return f"{message_id}~{tag[:ID_MAC_LENGTH]}"

    def sign(self, envelope: Envelope) -> Envelope:
        unsigned = envelope.model_copy(update={"mac": None})
        return unsigned.model_copy(update={"mac": self._mac(unsigned)})

    def verify(self, envelope: Envelope) -> str | None:
        """None when the MAC is valid, else why not (for the dead letter and the audit)."""
        if not envelope.mac:
            return f"{envelope.type} is internal and carries no MAC"
        expected = self._mac(envelope.model_copy(update={"mac": None}))
        if not hmac.compare_digest(envelope.mac, expected):
            return f"{envelope.type} carries a MAC that does not match"
        return None

    def _mac(self, envelope: Envelope) -> str:
        # A field added later is signed only when set: envelopes signed before it still verify.
        unset = {"traceparent"} if envelope.traceparent is None else set()
        document = envelope.model_dump(mode="json", exclude={"mac"} | unset)
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hmac.new(self._key, canonical.encode(), hashlib.sha256).hexdigest()


LOCAL_KEY_FILE = "message-signing.key"


def local_signing_key(folder: Path) -> bytes:
    """The local checkout's key (`folder/message-signing.key`), created on first use (0600).

    Two processes starting together both end with the first one's key: the file is created
    exclusively and only then written, and a reader waits for its content."""
    path = folder / LOCAL_KEY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):
            text = path.read_text().strip()
            if text:
                return text.encode()
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty: delete it to make a new key") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key.encode()
