"""Data events through the blob trigger with the data ledger on Azurite: the cost per event
does not grow with the keys a model has seen, and a storm of blobs makes one job.

1. For 10k, 100k and 1M keys already in a model's index (its shards written directly), blob
   events one at a time through `triggers.data.data_blob_created` (Event Grid BlobCreated
   events, as devhost's subscription builds them: name, URL and ETag only): events
   per second and the size of the model's aggregate.
2. A storm: `storm` blobs landing at once under one model, delivered by `workers` threads (as
   Event Grid delivers to several instances), the shipped 10-minute debounce: the wall time
   (well inside the window?), the per-event latency of the last thousand against the first
   thousand, the aggregate's writes, then the window's close and the one job it submits, and
   the timer's sweeps that release the rest of its data.
3. `python -m benchmarks.bench_data_ledger close [items]`: the window close alone, on `items`
   pending items (default 3,000), as the code was before the release went into chunks
   (adapters/data_ledger.py at BEFORE, which released everything inside the close) and as it
   is: the longest single handling (the close's message, or one release chunk) of each.

Figures are ratios and sizes within one run (Azurite's own speed varies with the machine).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from statistics import mean
from typing import Any

import azure.functions as func
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContainerClient

from adapters.azurite import start_azurite
from adapters.blob_state import ensure_container
from adapters.data_ledger import BlobDataLedger, claimant_hash, key_hash, shard_of
from devhost.host.pollers import blob_created_event
from orchestrator import handlers
from orchestrator.bootstrap import Runtime, set_runtime
from orchestrator.messages import Envelope
from orchestrator.ports import DataLedger, JobStatus, TrainingRequest
from orchestrator.settings import load_settings
from retrain.commands import DataItem
from retrain.decide import window_message_id
from triggers.data import data_blob_created
from triggers.envelopes import data_landed_envelope

ACCOUNT = "https://acct.blob.core.windows.net"
created = data_blob_created._function.get_user_function()  # the function the worker calls
WINDOW = timedelta(minutes=10)  # the shipped debounce (domain/policy.py RetrainSettings)


QUIET = 2.0  # seconds: the window closes once no data has landed this long (shipped: 1m)


def policy(model: str) -> str:
    return (
        f"model: {model}\nendpoint: {model}-ep\n"
        f"data: {{container: training-data, prefix: {model}/}}\n"
        f"retrain: {{quiet: {QUIET:g}s}}\n"
    )


class Submissions:
    """The TrainingBackend port, counting what it is asked to train on."""

    def __init__(self) -> None:
        self.requests: list[TrainingRequest] = []

    def submit(self, request: TrainingRequest) -> str:
        self.requests.append(request)
        return request.run_id

    def status(self, job_id: str) -> JobStatus:
        return JobStatus(job_id=job_id, state="queued")

    def cancel(self, job_id: str) -> None:
        pass


def blob(model: str, n: int) -> func.EventGridEvent:
    return blob_created_event(
        f"{ACCOUNT}/training-data", f"{model}/part-{n:07d}.csv", f"0x8DC{n:012X}", 1000
    )


def prefill(ledger: BlobDataLedger, model: str, keys: int, workers: int) -> float:
    """Write `keys` keys into the model's shards directly (what years of data would leave)."""
    started = time.perf_counter()
    shards: dict[int, dict[str, list[Any]]] = {}
    seen_at = int(time.time())
    who = claimant_hash("prefill")
    for n in range(keys):
        hashed = key_hash(f"blob:old/{model}/{n}.csv@0x1")
        shards.setdefault(shard_of(hashed), {})[hashed] = [who, seen_at]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda item: ledger.write_shard(model, *item), shards.items()))
    return time.perf_counter() - started


@contextmanager
def app(
    folder: str,
    connection_string: str,
    models: list[str],
    ledger: Callable[[ContainerClient], DataLedger] | None = None,
) -> Iterator[Runtime]:
    policies = Path(folder, "policies")
    policies.mkdir()
    for model in models:
        (policies / f"{model}.yml").write_text(policy(model))
    settings = load_settings(
        AzureWebJobsStorage=connection_string,
        POLICY_DIR=str(policies),
        RETRAIN_LOCAL_DIR=folder,
        STATE_CONTAINER=f"state{uuid.uuid4().hex[:8]}",
        DataStorage__blobServiceUri=ACCOUNT,
    )
    overrides: dict[str, Any] = {"training": Submissions()}
    if ledger is not None:  # on the state container, where the app keeps its own
        service = BlobServiceClient.from_connection_string(connection_string)
        container = service.get_container_client(settings.state_container)
        overrides["ledger"] = ledger(ensure_container(container))
    runtime = Runtime(settings, overrides=overrides)
    set_runtime(runtime)
    try:
        yield runtime
    finally:
        set_runtime(None)


@dataclass(frozen=True)
class Delivery:
    started: float
    seconds: float
    requests: int  # storage requests the event cost (state, key shard, pending item)


_requests = threading.local()


@contextmanager
def counting_requests() -> Iterator[None]:
    """Count the HTTP requests each thread sends through azure-core's requests transport."""
    send = RequestsTransport.send

    def counted(self: RequestsTransport, request: Any, **kwargs: Any) -> Any:
        _requests.count = getattr(_requests, "count", 0) + 1
        return send(self, request, **kwargs)

    RequestsTransport.send = counted  # type: ignore[method-assign]
    try:
        yield
    finally:
        RequestsTransport.send = send  # type: ignore[method-assign]


def timed_event(model: str, n: int) -> Delivery:
    _requests.count = 0
    started = time.perf_counter()
    created(blob(model, n))
    return Delivery(started, time.perf_counter() - started, _requests.count)


class EmulatorProbe:
    """Azurite's own cost per request over time: one GET of a fixed small blob every 0.2 s.
    The emulator keeps its blob index in LokiJS and every request scans it, so each request
    slows as the account fills, whoever sends it; a storage account does not. Dividing by
    this separates what an event costs from what the emulator has become."""

    def __init__(self, connection_string: str) -> None:
        service = BlobServiceClient.from_connection_string(connection_string)
        self._container = service.get_container_client(f"probe{uuid.uuid4().hex[:8]}")
        self._container.create_container()
        self._container.upload_blob("probe", b"x" * 600)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            started = time.perf_counter()
            self._container.download_blob("probe").readall()
            self.samples.append((started, time.perf_counter() - started))

    def __enter__(self) -> EmulatorProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def during(self, deliveries: list[Delivery]) -> float:
        begin = min(d.started for d in deliveries)
        end = max(d.started + d.seconds for d in deliveries)
        return mean([s for t, s in self.samples if begin <= t <= end] or [float("nan")])


def main(
    levels: tuple[int, ...] = (10_000, 100_000, 1_000_000),
    events: int = 500,
    storm: int = 10_000,
    workers: int = 8,
) -> None:
    # Each level in an emulator of its own: Azurite slows down as it holds more blobs (its
    # whole blob index is re-saved as it grows), which would blur what the key count costs.
    rates = {}
    for level in levels:
        model = f"keys{level}"
        with (
            start_azurite() as azurite,
            tempfile.TemporaryDirectory() as folder,
            app(folder, azurite.connection_string, [model]) as runtime,
        ):
            ledger = runtime.ports.ledger
            assert isinstance(ledger, BlobDataLedger)
            filled = prefill(ledger, model, level, workers)
            with counting_requests():
                deliveries = [timed_event(model, n) for n in range(events)]
            rates[level] = len(deliveries) / sum(d.seconds for d in deliveries)
            size = len(runtime.ports.store.load(model)[0].model_dump_json())
            report(
                f"{level:>9,} keys in the index (filled in {filled:5.1f} s): "
                f"{rates[level]:7.1f} events/s one at a time, aggregate {size:,} bytes"
            )
    low, high = min(levels), max(levels)
    report(f"rate at {high:,} keys / rate at {low:,} keys: {rates[high] / rates[low]:.2f}")

    storm_run(storm, workers)


def storm_run(
    storm: int,
    workers: int,
    ledger: Callable[[ContainerClient], DataLedger] | None = None,
    *,
    reuse: bool = True,
    release: bool = True,
) -> float:
    """`storm` blobs under one model at once by `workers` threads; the wall time. `ledger`:
    another ledger (on the state container); `reuse=False`: every event reads the aggregate
    (orchestrator/handlers.py OPEN_WINDOW_REUSE at zero)."""
    with (
        start_azurite() as azurite,
        tempfile.TemporaryDirectory() as folder,
        app(folder, azurite.connection_string, ["storm"], ledger) as runtime,
        _reuse(reuse),
    ):
        ledger_in_use = runtime.ports.ledger
        # The storm: every blob at once, several deliveries in parallel.
        started = time.perf_counter()
        with (
            EmulatorProbe(azurite.connection_string) as probe,
            counting_requests(),
            ThreadPoolExecutor(workers) as pool,
        ):
            deliveries = list(pool.map(lambda n: timed_event("storm", n), range(storm)))
        wall = time.perf_counter() - started
        aggregate = runtime.ports.store.load("storm")[0]
        window = aggregate.retrain.window
        assert window is not None, "no window open after the storm"
        head = min(1000, storm // 10)
        ordered = sorted(deliveries, key=lambda d: d.started)
        firsts, lasts = ordered[:head], ordered[-head:]
        first, last = mean(d.seconds for d in firsts), mean(d.seconds for d in lasts)
        per_request = probe.during(lasts) / probe.during(firsts)
        report(
            f"storm: {storm:,} blobs by {workers} workers in {wall:.1f} s "
            f"({storm / wall:.1f} events/s; {wall / WINDOW.total_seconds():.0%} of the "
            f"{WINDOW} window), aggregate version {aggregate.version}"
        )
        report(
            f"requests per event, first {head} / last {head}: "
            f"{mean(d.requests for d in firsts):.2f} / {mean(d.requests for d in lasts):.2f}"
        )
        report(
            f"per-event latency, last {head} / first {head}: {last / first:.2f} "
            f"({last * 1000:.1f} ms / {first * 1000:.1f} ms); Azurite's own GET over the same "
            f"spans: {per_request:.2f}; per event in the emulator's requests: "
            f"{last / first / per_request:.2f}"
        )
        # The window closes once the storm is over (its quiet period): one job on every blob.
        time.sleep(QUIET)
        close = Envelope.new(
            "RetrainWindowClosed",
            "storm",
            {"window_id": window.id, "seq": window.seq},
            message_id=window_message_id("storm", window.id, window.seq),
        )
        started = time.perf_counter()
        runtime.handlers.handle(runtime.signer.sign(close))
        closing = time.perf_counter() - started
        submitted: Submissions = runtime.ports.training  # type: ignore[assignment]
        jobs = [r for r in submitted.requests if r.model == "storm"]
        uris = {uri for request in jobs for uri in request.data_uris}
        report(
            f"window close: {len(jobs)} job(s) on {len(uris):,} distinct blobs "
            f"in {closing:.1f} s; pending after: {ledger_in_use.pending('storm').items}"
        )
        if release:
            chunks, sweeps = release_by_sweeps(runtime, "storm")
            report(
                f"then {len(sweeps)} sweep(s) released the rest: {len(chunks)} chunk(s) of "
                f"{runtime.outbox.release_chunk}, the longest {max(chunks, default=0):.1f} s, "
                f"the longest sweep {max(sweeps, default=0):.1f} s"
            )
        return wall


@contextmanager
def _reuse(on: bool) -> Iterator[None]:
    saved = handlers.OPEN_WINDOW_REUSE
    if not on:
        handlers.OPEN_WINDOW_REUSE = timedelta(0)
    try:
        yield
    finally:
        handlers.OPEN_WINDOW_REUSE = saved


# The ledger and handlers before a storm's event cost two requests (claims in the key shards,
# and every event read the aggregate): the storm's "before" figure.
STORM_BEFORE = "e32e8623e5b68e774b76a30a7e389ea255a582db"


def storm_main(storm: int = 10_000, workers: int = 8) -> None:
    """The storm as the code was at STORM_BEFORE and as it is, one after the other (each in
    its own emulator), then the ratio of their wall times."""
    report(f"before ({STORM_BEFORE[:7]}: claims in the key shards, an aggregate read per event):")
    before = storm_run(
        storm,
        workers,
        lambda container: ledger_at(STORM_BEFORE, container),
        reuse=False,
        release=False,
    )
    report("now:")
    now = storm_run(storm, workers)
    report(f"storm wall time, now / before: {now / before:.2f}")


# --------------------------------------------------------------------------- the close alone

# The data ledger as it was before the release went into chunks (the whole release inside the
# close's dispatch): the commit the "before" figure is measured on.
BEFORE = "e4c11718596a4a8cc69953f27d42adde227873e3"


class WholeRelease:
    """The ledger of BEFORE behind today's port: `release` ignores the limit and deletes every
    item at once, inside the close, as it used to."""

    def __init__(self, old: Any) -> None:
        self._old = old

    def __getattr__(self, name: str) -> Any:
        return getattr(self._old, name)

    def release(self, model: str, run_id: str, limit: int) -> int:
        self._old.release(model, run_id)
        return 0

    def releasing(self, model: str) -> list[str]:
        return []


def ledger_at(commit: str, container: ContainerClient) -> Any:
    """adapters/data_ledger.py's BlobDataLedger as it was at `commit`."""
    source = subprocess.run(
        ["git", "show", f"{commit}:adapters/data_ledger.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    spec = importlib.util.spec_from_loader(f"data_ledger_{commit[:7]}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"data_ledger_{commit[:7]}.py", "exec"), module.__dict__)
    return module.BlobDataLedger(container)


def ledger_before(container: ContainerClient) -> DataLedger:
    return WholeRelease(ledger_at(BEFORE, container))  # type: ignore[return-value]


class TimedReleases:
    """Wraps a ledger's `release` to time each call (one chunk, or the whole release)."""

    def __init__(self, ledger: DataLedger) -> None:
        self.ledger = ledger
        self.calls: list[float] = []
        self._release = ledger.release

        def timed(model: str, run_id: str, limit: int) -> int:
            started = time.perf_counter()
            try:
                return self._release(model, run_id, limit)
            finally:
                self.calls.append(time.perf_counter() - started)

        ledger.release = timed  # type: ignore[method-assign]


def release_by_sweeps(runtime: Runtime, model: str) -> tuple[list[float], list[float]]:
    """Run the timer's sweep until the model's data is released: each chunk's and each
    sweep's time (the chunk the close released is not counted)."""
    timer = TimedReleases(runtime.ports.ledger)
    sweeps = []
    while runtime.ports.ledger.releasing(model):
        started = time.perf_counter()
        runtime.maintenance.sweep()
        sweeps.append(time.perf_counter() - started)
    return timer.calls, sweeps


def fill(runtime: Runtime, model: str, items: int) -> None:
    """`items` pending items through the handlers, 1,000 a message (the per-event cap)."""
    for start in range(0, items, 1000):
        batch = [
            DataItem(
                uri=f"{ACCOUNT}/training-data/{model}/part-{n:07d}.csv",
                key=f"blob:{model}/part-{n:07d}.csv@0x1",
            )
            for n in range(start, min(start + 1000, items))
        ]
        runtime.handlers.handle(data_landed_envelope(model, batch, "eventhub"))


def timed_close(runtime: Runtime, model: str) -> tuple[float, float, int]:
    """Close the model's open window: the seconds its message took, the longest release call
    within it, and how many items the job took."""
    window = runtime.ports.store.load(model)[0].retrain.window
    assert window is not None, "no window open"
    time.sleep(QUIET)
    close = Envelope.new(
        "RetrainWindowClosed",
        model,
        {"window_id": window.id, "seq": window.seq},
        message_id=window_message_id(model, window.id, window.seq),
    )
    timer = TimedReleases(runtime.ports.ledger)
    started = time.perf_counter()
    runtime.handlers.handle(runtime.signer.sign(close))
    closing = time.perf_counter() - started
    submitted: Submissions = runtime.ports.training  # type: ignore[assignment]
    [job] = [r for r in submitted.requests if r.model == model]
    return closing, max(timer.calls, default=0.0), len(job.data_uris)


def close_main(items: int = 3_000) -> None:
    for label, ledger in (("before", ledger_before), ("after", None)):
        with (
            start_azurite() as azurite,
            tempfile.TemporaryDirectory() as folder,
            app(folder, azurite.connection_string, ["close"], ledger) as runtime,
        ):
            fill(runtime, "close", items)
            closing, released, taken = timed_close(runtime, "close")
            line = (
                f"{label}: the close on {taken:,} items took {closing:.1f} s "
                f"(its release {released:.1f} s)"
            )
            if label == "after":
                chunks, sweeps = release_by_sweeps(runtime, "close")
                line += (
                    f"; then {len(sweeps)} sweep(s), {len(chunks)} release chunk(s) of "
                    f"{runtime.outbox.release_chunk}, the longest {max(chunks, default=0):.1f} "
                    f"s, the longest sweep {max(sweeps, default=0):.1f} s; pending after: "
                    f"{runtime.ports.ledger.pending('close').items}"
                )
            report(line)


def report(line: str) -> None:
    print(line, flush=True)  # as measured: the whole run takes minutes


if __name__ == "__main__":
    if sys.argv[1:2] == ["close"]:
        close_main(*(int(arg) for arg in sys.argv[2:3]))
    elif sys.argv[1:2] == ["storm"]:
        storm_main(*(int(arg) for arg in sys.argv[2:4]))
    else:
        main()
