"""DevHost: runs any `azure.functions.FunctionApp` locally, without Functions Core Tools.

    with DevHost("function_app", {"DATA_CONTAINER": "data"}, port=0) as host:
        httpx.get(f"{host.http_url}/health")
        host.run_pending_once()   # one pass over every non-HTTP trigger

See docs/devhost.md for how each trigger is mapped locally.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO

import azure.functions as func
import uvicorn
from azure.storage.queue import QueueServiceClient

from adapters.azurite import Azurite, parse_connection_string
from adapters.storage_queue_bus import StorageQueueConsumer
from devhost.host import discovery as kinds
from devhost.host.connections import (
    HOST_STORAGE,
    blob_service,
    local_queue_name,
    messaging_connection,
    queue_service,
)
from devhost.host.discovery import FunctionSpec, discover, load_app
from devhost.host.http_server import ANONYMOUS, HttpDispatcher, HttpFunction, build_http_app
from devhost.host.invoke import Invoker
from devhost.host.keys import DEFAULT_KEY_FILE, resolve_function_key
from devhost.host.local_services import (
    ENDPOINT_KEY_SETTING,
    ENDPOINT_URL_SETTING,
    EndpointServer,
    azurite_record,
    checkout_azurite,
    start_endpoint_server,
)
from devhost.host.messaging import queue_message_from_delivery, service_bus_message_from_delivery
from devhost.host.mlflow_ui import UI_URL_SETTING, MlflowUi, start_mlflow_ui
from devhost.host.outputs import OutputSink
from devhost.host.pollers import (
    BLOB_POISON_QUEUE,
    PROCESSING_VISIBILITY,
    BlobTriggerPoller,
    EventGridBlobPoller,
    EventHubReceiverPoller,
    LocalEventHubPoller,
    Poller,
    QueueTriggerPoller,
    ServiceBusReceiverPoller,
    TimerPoller,
    event_grid_subscription,
    utc_now,
)
from devhost.host.settings import DevHostError, HostConfig
from devhost.host.state_file import RUNNING, DevhostState, is_alive, read_state, write_state
from devhost.host.storage import ensure_queue_client

log = logging.getLogger("devhost")

SERVICE_BUS_MAX_DELIVERY_COUNT = 10  # Service Bus's default MaxDeliveryCount
AppTarget = str | ModuleType | func.FunctionApp


class DevHost:
    """A local Functions host: HTTP on 127.0.0.1, pollers for the other triggers.

    `settings` are exported into the environment (overriding it) before the app is imported,
    and the previous values are restored by `stop()`.
    """

    def __init__(
        self,
        app: AppTarget = "function_app",
        settings: Mapping[str, str] | None = None,
        *,
        port: int = 7071,
        host_json: Path | str | None = "host.json",
        function_key: str | None = None,
        key_file: Path | str = DEFAULT_KEY_FILE,
        poll_interval: float = 0.5,
        background_polling: bool = True,
        serve_http: bool = True,
        azurite: bool = True,
        mlflow_ui: bool = False,
        max_deliveries: int | None = None,
        retry_base: timedelta = timedelta(seconds=1),
        clock: Callable[[], datetime] = utc_now,
        retry_delay_scale: float = 1.0,
        state_dir: Path | str = ".local",
        state_file: Path | str | None = None,
        local_endpoint: bool = False,
        settings_file: Path | str | None = None,
    ) -> None:
        self._app_target = app
        self._settings = dict(settings or {})
        self._port = port
        self._host_config = HostConfig.load(Path(host_json) if host_json else None)
        self._explicit_key = function_key
        self._key_file = Path(key_file)
        self._poll_interval = poll_interval
        self._background_polling = background_polling
        self._serve_http = serve_http
        self._use_azurite = azurite
        self._use_mlflow_ui = mlflow_ui
        self._max_deliveries = max_deliveries
        self._retry_base = retry_base
        self._clock = clock
        self._retry_delay_scale = retry_delay_scale
        self._state_dir = Path(state_dir)
        # `state_file`: this checkout's record (devhost/host/state_file.py): its Azurite is
        # reused while it answers, and the CLI finds everything there.
        self._state_file = Path(state_file) if state_file else None
        self._settings_file = Path(settings_file).resolve() if settings_file else None
        self._use_local_endpoint = local_endpoint
        self._previous_state: DevhostState | None = None
        self._state_lock: IO[str] | None = None  # held while running (one devhost per file)
        self._endpoint: EndpointServer | None = None
        self._state_written = False

        self._lock = threading.RLock()
        self._started = False
        self._stopping = threading.Event()
        self._saved_environment: dict[str, str | None] = {}
        self._azurite: Azurite | None = None
        self._mlflow: MlflowUi | None = None
        self._server: uvicorn.Server | None = None
        self._server_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._pollers: list[tuple[Poller, threading.Lock]] = []
        self._streams: list[EventHubReceiverPoller] = []
        self._http_functions: list[HttpFunction] = []
        self.functions: list[FunctionSpec] = []
        self.function_key: str | None = None
        self.function_key_source: str | None = None
        self.bound_port: int | None = None

    # --- public API ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.bound_port is None:
            raise DevHostError("the HTTP server is not running")
        return f"http://127.0.0.1:{self.bound_port}"

    @property
    def http_url(self) -> str:
        """Where HTTP functions are: `http://127.0.0.1:<port>/<routePrefix>`."""
        prefix = self._host_config.route_prefix
        return f"{self.base_url}/{prefix}" if prefix else self.base_url

    @property
    def mlflow_url(self) -> str | None:
        return self._mlflow.url if self._mlflow else None

    @property
    def azurite(self) -> Azurite | None:
        return self._azurite

    @property
    def endpoint(self) -> EndpointServer | None:
        return self._endpoint

    @property
    def state_file(self) -> Path | None:
        return self._state_file

    @property
    def storage_connection_string(self) -> str | None:
        return os.environ.get(HOST_STORAGE)

    @property
    def host_config(self) -> HostConfig:
        return self._host_config

    def start(self) -> DevHost:
        """Load settings, storage, the app and its triggers; returns when serving."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            self._stopping.clear()
            self._http_functions, self._pollers, self._streams = [], [], []
            try:
                self._check_not_running()
                self._apply_settings()
                self._ensure_storage()
                if self._use_local_endpoint:
                    self._start_local_endpoint()
                self.functions = discover(load_app(self._app_target))
                self._build_triggers()
                self._resolve_key()
                if self._use_mlflow_ui:
                    self._start_mlflow_ui()
                if self._serve_http:
                    self._start_http()
                for stream in self._streams:
                    stream.start()
                if self._background_polling:
                    self._start_polling_threads()
            except BaseException:
                self.stop()
                raise
            self._log_startup()
            self._write_state(RUNNING)
            return self

    def run_pending_once(self) -> int:
        """One polling pass over every non-HTTP trigger; the number of invocations made."""
        if not self._started:
            raise DevHostError("start() the host first")
        invocations = 0
        for poller, lock in self._pollers:
            with lock:
                invocations += poller.poll_once()
        return invocations

    def stop(self) -> None:
        """Stop pollers and the HTTP server, end subprocesses, restore the environment."""
        with self._lock:
            if not self._started:
                return
            self._stopping.set()
            self._mark_stopped()  # first: a devhost starting meanwhile must not reuse ours
            for thread in self._threads:
                thread.join(timeout=30)
            self._threads.clear()
            self._stop_http()
            for poller, _ in self._pollers:
                self._close_quietly(poller)
            self._pollers.clear()
            for stream in self._streams:
                self._close_quietly(stream)
            self._streams.clear()
            if self._mlflow is not None:
                self._mlflow.stop()
                self._mlflow = None
            if self._endpoint is not None:
                self._endpoint.stop()  # only ends a server this host started
                self._endpoint = None
            if self._azurite is not None:
                self._azurite.stop()  # only ends an emulator this host started
                self._azurite = None
            self._restore_environment()
            self._started = False
            if self._state_lock is not None:  # released last: the record says stopped
                self._state_lock.close()
                self._state_lock = None

    def wait(self) -> None:
        """Block until stop() is called (the CLI's main loop; Ctrl-C interrupts it)."""
        while not self._stopping.wait(1.0):
            pass

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- settings and storage -----------------------------------------------------------------

    def _set_environment(self, key: str, value: str) -> None:
        if key not in self._saved_environment:
            self._saved_environment[key] = os.environ.get(key)
        os.environ[key] = value

    def _apply_settings(self) -> None:
        # The dashboard's local sign-in (any name gets a token) is devhost's alone: the app
        # answers it only with this set (triggers/dashboard.py). A setting may still turn it off.
        self._set_environment("DEVHOST_LOCAL_SIGN_IN", "1")
        for key, value in self._settings.items():
            self._set_environment(key, str(value))

    def _restore_environment(self) -> None:
        for key, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environment.clear()

    def _ensure_storage(self) -> None:
        """Azurite when storage is absent or `UseDevelopmentStorage=true`: this checkout's
        (the state file's, while it answers) or a new one on free ports, never one that merely
        answers on the default ports. Its real connection string replaces every
        `UseDevelopmentStorage=true` setting (AzureWebJobsStorage and others, e.g. a data
        account) before the app is imported."""
        current = os.environ.get(HOST_STORAGE)
        if not self._use_azurite or not _wants_development_storage(current):
            return
        if current is None and _has_identity_storage(os.environ):
            return
        previous = self._previous_state
        location = self._state_file.parent.resolve() / "azurite" if self._state_file else None
        self._azurite = checkout_azurite(
            previous.azurite if previous else None,
            location,
            may_still_run=previous is not None and previous.status == RUNNING,
        )
        self._set_environment(HOST_STORAGE, self._azurite.connection_string)
        for key, value in list(os.environ.items()):
            if key != HOST_STORAGE and _is_development_storage(value):
                self._set_environment(key, self._azurite.connection_string)
        where = "started" if self._azurite.started_here else "reused"
        log.info("Azurite %s: blob %s", where, self._azurite.blob_endpoint)

    def _start_local_endpoint(self) -> None:
        """The local endpoint server the app deploys to; its URL (and key) become the app's
        LOCAL_ENDPOINT_URL (and LOCAL_ENDPOINT_KEY) before the app is imported."""
        local_dir = Path(os.environ.get("RETRAIN_LOCAL_DIR") or self._state_dir)
        self._endpoint = start_endpoint_server(os.environ, local_dir)
        self._set_environment(ENDPOINT_URL_SETTING, self._endpoint.url)
        self._set_environment(ENDPOINT_KEY_SETTING, self._endpoint.key)

    # --- the state file -----------------------------------------------------------------------

    def _check_not_running(self) -> None:
        """One devhost per state file: a second would take over the first one's record. An
        exclusive lock beside the file, held while this host runs, closes the gap between
        the check and the record (two `make devhost` started together)."""
        if self._state_file is None:
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        lock = self._state_file.with_suffix(".lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DevHostError(
                f"a devhost is starting or running in this checkout ({self._state_file}): "
                "stop it first, or give this one another --state-dir"
            ) from None
        self._state_lock = lock
        self._previous_state = read_state(self._state_file)
        previous = self._previous_state
        if previous is not None and previous.pid != os.getpid() and is_alive(previous):
            raise DevHostError(
                f"a devhost already runs in this checkout (pid {previous.pid}, "
                f"{previous.app_url}; {self._state_file}): stop it first, or give this one "
                "another --state-dir (if that process is no devhost, remove the file)"
            )

    def _current_state(self, status: str) -> DevhostState:
        from_file = (self.function_key_source or "").startswith(str(self._key_file))
        # What a tool needs to reach what the app reaches (the CLI applies them).
        shared = (HOST_STORAGE, "DataStorage", ENDPOINT_URL_SETTING)
        return DevhostState(
            status=status,
            pid=os.getpid(),
            checkout=str(Path.cwd()),
            app_url=self.http_url if self.bound_port is not None else None,
            function_key_file=str(self._key_file.resolve()) if from_file else None,
            settings_file=str(self._settings_file) if self._settings_file else None,
            azurite=azurite_record(self._azurite) if self._azurite else None,
            endpoint=self._endpoint.record() if self._endpoint else None,
            mlflow_ui_url=self.mlflow_url,
            app_settings={name: os.environ[name] for name in shared if os.environ.get(name)},
        )

    def _write_state(self, status: str) -> None:
        if self._state_file is not None:
            write_state(self._state_file, self._current_state(status))
            self._state_written = True

    def _mark_stopped(self) -> None:
        """Marked stopped, not removed: the record of the Azurite stays for the next start."""
        if self._state_file is not None and self._state_written:
            state = read_state(self._state_file)
            if state is not None and state.pid == os.getpid():
                write_state(self._state_file, state.stopped())
            self._state_written = False

    # --- triggers -----------------------------------------------------------------------------

    def _build_triggers(self) -> None:
        sink = OutputSink(os.environ)
        app_directory = Path.cwd()
        for spec in self.functions:
            invoker = Invoker(spec, sink, app_directory, self._stopping, self._retry_delay_scale)
            if spec.trigger_type == kinds.HTTP_TRIGGER:
                self._http_functions.append(HttpFunction.from_invoker(invoker))
            elif spec.trigger_type == kinds.EVENT_HUB_TRIGGER and self._real_connection(spec):
                self._streams.append(self._event_hub_stream(invoker))
            else:
                self._pollers.append((self._poller(invoker), threading.Lock()))

    def _real_connection(self, spec: FunctionSpec) -> bool:
        return messaging_connection(spec.trigger.get("connection"), os.environ) is not None

    def _poller(self, invoker: Invoker) -> Poller:
        builders: dict[str, Callable[[Invoker], Poller]] = {
            kinds.BLOB_TRIGGER: self._blob_poller,
            kinds.EVENT_GRID_TRIGGER: self._event_grid_poller,
            kinds.SERVICE_BUS_TRIGGER: self._service_bus_poller,
            kinds.EVENT_HUB_TRIGGER: self._local_event_hub_poller,
            kinds.QUEUE_TRIGGER: self._queue_poller,
            kinds.TIMER_TRIGGER: lambda invoker: TimerPoller(invoker, self._clock),
        }
        return builders[invoker.spec.trigger_type](invoker)

    def _blob_poller(self, invoker: Invoker) -> Poller:
        host_queues = queue_service(None, os.environ)
        return BlobTriggerPoller(
            invoker,
            blobs=blob_service(invoker.spec.trigger.get("connection"), os.environ),
            host_blobs=blob_service(None, os.environ),
            poison_queue=ensure_queue_client(host_queues, BLOB_POISON_QUEUE),
            poison_threshold=self._host_config.blob_poison_threshold,
        )

    def _event_grid_poller(self, invoker: Invoker) -> Poller:
        connection, path = event_grid_subscription(invoker.spec.name, os.environ)
        host_queues = queue_service(None, os.environ)
        return EventGridBlobPoller(
            invoker,
            blobs=blob_service(connection, os.environ),
            host_blobs=blob_service(None, os.environ),
            poison_queue=ensure_queue_client(host_queues, BLOB_POISON_QUEUE),
            poison_threshold=self._host_config.blob_poison_threshold,
            path=path,
        )

    def _consumer(
        self, queues: QueueServiceClient, name: str, max_deliveries: int
    ) -> StorageQueueConsumer:
        return StorageQueueConsumer(
            ensure_queue_client(queues, name),
            ensure_queue_client(queues, f"{name}-poison"),
            max_deliveries=max_deliveries,
            visibility_timeout=PROCESSING_VISIBILITY,
            retry_base=self._retry_base,
        )

    def _service_bus_poller(self, invoker: Invoker) -> Poller:
        trigger = invoker.spec.trigger
        real = messaging_connection(trigger.get("connection"), os.environ)
        if real is not None:
            return ServiceBusReceiverPoller(invoker, real, max_wait=self._poll_interval)
        name = local_queue_name(trigger.get("queueName") or trigger["topicName"])
        max_deliveries = self._max_deliveries or SERVICE_BUS_MAX_DELIVERY_COUNT
        consumer = self._consumer(queue_service(None, os.environ), name, max_deliveries)
        return QueueTriggerPoller(invoker, consumer, service_bus_message_from_delivery)

    def _local_event_hub_poller(self, invoker: Invoker) -> Poller:
        name = local_queue_name(invoker.spec.trigger["eventHubName"])
        queue = ensure_queue_client(queue_service(None, os.environ), name)
        return LocalEventHubPoller(invoker, queue, self._host_config.event_hub_max_batch_size)

    def _event_hub_stream(self, invoker: Invoker) -> EventHubReceiverPoller:
        real = messaging_connection(invoker.spec.trigger.get("connection"), os.environ)
        assert real is not None
        return EventHubReceiverPoller(invoker, real, self._host_config.event_hub_max_batch_size)

    def _queue_poller(self, invoker: Invoker) -> Poller:
        trigger = invoker.spec.trigger
        queues = queue_service(trigger.get("connection"), os.environ)
        max_deliveries = self._max_deliveries or self._host_config.queue_max_dequeue_count
        consumer = self._consumer(queues, trigger["queueName"], max_deliveries)
        return QueueTriggerPoller(invoker, consumer, queue_message_from_delivery)

    def _start_polling_threads(self) -> None:
        for poller, lock in self._pollers:
            thread = threading.Thread(
                target=self._poll_forever,
                args=(poller, lock),
                name=f"devhost-{poller.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _poll_forever(self, poller: Poller, lock: threading.Lock) -> None:
        while not self._stopping.is_set():
            delay = self._poll_interval
            try:
                with lock:
                    poller.poll_once()
            except Exception:
                log.exception("%s: polling failed; trying again", poller.name)
                delay = max(5.0, self._poll_interval)
            self._stopping.wait(delay)

    @staticmethod
    def _close_quietly(poller: Poller | EventHubReceiverPoller) -> None:
        try:
            poller.close()
        except Exception:
            log.exception("%s: closing failed", poller.name)

    # --- HTTP ---------------------------------------------------------------------------------

    def _resolve_key(self) -> None:
        if not any(f.auth_level != ANONYMOUS for f in self._http_functions):
            return
        self.function_key, self.function_key_source = resolve_function_key(
            self._explicit_key, os.environ, self._key_file
        )

    def _start_http(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self._port))
        except OSError as exc:
            listener.close()
            raise DevHostError(f"cannot listen on 127.0.0.1:{self._port}: {exc}") from exc
        self.bound_port = int(listener.getsockname()[1])
        dispatcher = HttpDispatcher(
            self._http_functions, self._host_config.route_prefix, self.function_key or ""
        )
        config = uvicorn.Config(
            build_http_app(dispatcher), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._server_thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, name="devhost-http",
            daemon=True,
        )  # fmt: skip
        self._server_thread.start()
        self._wait_until_serving()

    def _wait_until_serving(self, timeout: float = 15.0) -> None:
        assert self._server is not None and self._server_thread is not None
        finished = threading.Event()
        waited = 0.0
        while not self._server.started:
            if not self._server_thread.is_alive() or waited > timeout:
                raise DevHostError(f"the HTTP server did not start on port {self.bound_port}")
            finished.wait(0.02)
            waited += 0.02

    def _stop_http(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout=15)
        self._server = None
        self._server_thread = None
        self.bound_port = None

    # --- MLflow UI and startup log ------------------------------------------------------------

    def _start_mlflow_ui(self) -> None:
        self._mlflow = start_mlflow_ui(
            os.environ.get("MLFLOW_TRACKING_URI"),
            self._state_dir / "mlflow-ui.log",
            os.environ.get(UI_URL_SETTING) or None,
        )

    def _log_startup(self) -> None:
        for line in self.describe():
            log.info("%s", line)

    def describe(self) -> list[str]:
        """What `func start` prints: each function, with the URL of HTTP ones."""
        lines = ["Functions:"]
        by_name = {f.invoker.spec.name: f for f in self._http_functions}
        for spec in self.functions:
            http = by_name.get(spec.name)
            if http is not None and self.bound_port is not None:
                methods = ",".join(sorted(http.methods)) if len(http.methods) < 8 else "ALL"
                url = f"{self.http_url}/{http.route.template.strip('/')}"
                lines.append(f"  {spec.name}: [{methods}] {url} (auth: {http.auth_level})")
            else:
                lines.append(f"  {spec.name}: {spec.trigger_type} {_trigger_detail(spec)}")
        if self.function_key:
            lines.append(f"Function key ({self.function_key_source}): {self.function_key}")
        if self._mlflow is not None:
            reused = " (already running)" if self._mlflow.reused else ""
            lines.append(f"MLflow UI: {self._mlflow.url}{reused}")
        return lines


def _trigger_detail(spec: FunctionSpec) -> str:
    trigger = spec.trigger
    for key in ("path", "queueName", "topicName", "eventHubName", "schedule"):
        if trigger.get(key):
            return f"{key}={trigger[key]}"
    return ""


def _is_development_storage(connection_string: str) -> bool:
    parts = parse_connection_string(connection_string)
    return parts.get("UseDevelopmentStorage", "").lower() == "true"


def _wants_development_storage(connection_string: str | None) -> bool:
    return not connection_string or _is_development_storage(connection_string)


def _has_identity_storage(environ: Mapping[str, str]) -> bool:
    return any(key.startswith(f"{HOST_STORAGE}__") for key in environ)
