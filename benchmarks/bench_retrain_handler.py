"""Data-landed events per second through the retrain handler, on the Azurite state store.

One at a time (a blob trigger: one command, one conditional write per event), and in
batches of 1,000 (an Event Hubs batch: one command, one write per model per batch), next to
raw state-store transitions (load + save of a small aggregate) measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

from pydantic import BaseModel

from adapters.azurite import start_azurite
from adapters.blob_state import BlobStateStore, ensure_container
from benchmarks.common import Rate, measure, ratio_line
from orchestrator.bootstrap import Runtime
from orchestrator.messages import Envelope
from orchestrator.settings import load_settings
from retrain.commands import DataItem
from triggers.envelopes import data_landed_envelope

POLICY = """\
model: bench
endpoint: bench-ep
data: {container: training-data, prefix: bench/}
retrain: {debounce: 1h, min_new_files: 1, cooldown: 0s}
"""


class Small(BaseModel):
    key: str
    version: int = 0
    count: int = 0


def landed(model: str, start: int, count: int) -> Envelope:
    items = [
        DataItem(
            uri=f"https://acct.blob.core.windows.net/training-data/{model}/{n}.csv",
            key=f"blob:{model}/{n}.csv@{n}",
        )
        for n in range(start, start + count)
    ]
    return data_landed_envelope(model, items, "bench")


def main(single: int = 200, batches: int = 5, batch_size: int = 1000) -> None:
    with start_azurite() as azurite, tempfile.TemporaryDirectory() as folder:
        policies = Path(folder, "policies")
        policies.mkdir()
        (policies / "bench.yml").write_text(POLICY)
        runtime = Runtime(
            load_settings(
                AzureWebJobsStorage=azurite.connection_string,
                POLICY_DIR=str(policies),
                RETRAIN_LOCAL_DIR=folder,
                # The data account the events' URIs name (others are refused).
                DataStorage__blobServiceUri="https://acct.blob.core.windows.net",
            )
        )
        handlers = runtime.handlers
        handlers.handle(landed("bench", 10**9, 1))  # warm up: create the aggregate

        one_by_one = measure(
            "events one at a time (1 write each)",
            lambda n: handlers.handle(landed("bench", n, 1)),
            single,
        )
        started = time.perf_counter()
        for index in range(batches):
            handlers.handle(landed("bench", 10**6 + index * batch_size, batch_size))
        batched = Rate(
            f"events in batches of {batch_size} (1 write per batch)",
            batches * batch_size,
            time.perf_counter() - started,
        )
        container = ensure_container(
            runtime.blob_service.get_container_client(f"raw{uuid.uuid4().hex[:10]}")
        )
        store = BlobStateStore(container, Small, lambda key: Small(key=key))
        raw = measure(
            "raw state-store transitions",
            lambda n: store.update("raw", lambda s: s.model_copy(update={"count": s.count + 1})),
            single,
        )
    print(raw.line())
    print(one_by_one.line())
    print(batched.line())
    print(ratio_line("one-at-a-time events / raw transitions", one_by_one, raw))
    print(ratio_line("batched events / raw transitions", batched, raw))


if __name__ == "__main__":
    main()
