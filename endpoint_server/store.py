"""The request log of the local endpoint: one SQLite file in the server's data dir.

Writes are queued and committed in batches by one writer thread (the only connection that
writes), so recording a request costs a queue put on the serving path. Readers open their own
connections; the database runs in WAL mode so they never block the writer.

Schema (read by `pipelines.canary.evaluate_canary`):

- ``records``: request_id, request_key, deployment, model_version, ts (epoch seconds, UTC),
  latency_ms, inputs (JSON), outputs (JSON or NULL), status (HTTP status), error, mirrored (0/1)
- ``feedback``: request_id (primary key), label (JSON), ts
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORDS_FILE = "records.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT NOT NULL,
    request_key TEXT,
    deployment TEXT NOT NULL,
    model_version TEXT,
    ts REAL NOT NULL,
    latency_ms REAL,
    inputs TEXT,
    outputs TEXT,
    status INTEGER NOT NULL,
    error TEXT,
    mirrored INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS records_request ON records (request_id);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY,
    label TEXT,
    ts REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Record:
    request_id: str
    request_key: str | None
    deployment: str
    model_version: str | None
    ts: float
    latency_ms: float | None
    inputs: Any
    outputs: Any
    status: int
    error: str | None = None
    mirrored: bool = False

    def row(self) -> tuple[Any, ...]:
        return (
            self.request_id,
            self.request_key,
            self.deployment,
            self.model_version,
            self.ts,
            self.latency_ms,
            json.dumps(self.inputs, default=str),
            None if self.outputs is None else json.dumps(self.outputs, default=str),
            self.status,
            self.error,
            int(self.mirrored),
        )


def connect(path: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


class RecordStore:
    """Thread-safe, batched writer of request records and feedback."""

    def __init__(self, path: Path | str, batch_size: int = 500) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connect(self.path).close()  # create the schema before anyone reads
        self._queue: queue.Queue[Any] = queue.Queue()
        self._batch_size = batch_size
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="endpoint-records", daemon=True)
        self._thread.start()

    def record(self, record: Record) -> None:
        self._queue.put(("r", record.row()))

    def feedback(self, request_id: str, label: Any, ts: float) -> None:
        self._queue.put(("f", (request_id, json.dumps(label, default=str), ts)))

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything queued so far is committed."""
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(("stop", None))
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conn = connect(self.path)
        try:
            while True:
                items = [self._queue.get()]
                while len(items) < self._batch_size:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                records = [payload for kind, payload in items if kind == "r"]
                feedback = [payload for kind, payload in items if kind == "f"]
                if records:
                    conn.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)", records)
                if feedback:
                    conn.executemany(
                        "INSERT OR REPLACE INTO feedback (request_id, label, ts) VALUES (?,?,?)",
                        feedback,
                    )
                if records or feedback:
                    conn.commit()
                for kind, payload in items:
                    if kind == "flush":
                        payload.set()
                if any(kind == "stop" for kind, _ in items):
                    return
        finally:
            conn.close()
