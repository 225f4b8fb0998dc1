"""State-store transitions per second against Azurite, next to raw conditional blob writes.

A transition is what a handler does: load the aggregate (GET), apply, save with If-Match
(PUT). A raw write is one conditional PUT with a known ETag. The ratio says what the state
store costs over the storage floor; measured side by side in one run.
"""

from __future__ import annotations

import uuid

from azure.core import MatchConditions
from azure.storage.blob import BlobServiceClient
from pydantic import BaseModel

from adapters.azurite import start_azurite
from adapters.blob_state import BlobStateStore, ensure_container
from benchmarks.common import measure, ratio_line


class Counter(BaseModel):
    key: str
    version: int = 0
    count: int = 0


def main(count: int = 300) -> None:
    with start_azurite() as azurite:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = ensure_container(service.get_container_client(f"b{uuid.uuid4().hex[:12]}"))
        store = BlobStateStore(container, Counter, lambda key: Counter(key=key))
        store.update("warm", lambda c: c.model_copy(update={"count": 1}))

        blob = container.get_blob_client("raw.json")
        etag = [blob.upload_blob(b"{}", overwrite=True)["etag"]]

        def raw_write(index: int) -> None:
            body = Counter(key="raw", count=index).model_dump_json().encode()
            etag[0] = blob.upload_blob(
                body, overwrite=True, etag=etag[0], match_condition=MatchConditions.IfNotModified
            )["etag"]

        def transition(index: int) -> None:
            store.update("bench", lambda c: c.model_copy(update={"count": c.count + 1}))

        raw = measure("raw conditional blob writes", raw_write, count)
        transitions = measure("state-store transitions (load+apply+save)", transition, count)
    print(raw.line())
    print(transitions.line())
    print(ratio_line("transitions / raw writes", transitions, raw))


if __name__ == "__main__":
    main()
