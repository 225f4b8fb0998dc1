"""``python -m endpoint_server --data-dir DIR --tracking-uri URI [--port N] [--key KEY]``.

Prints ``listening on http://127.0.0.1:PORT`` once it serves: every endpoint the policies name,
under ``/{endpoint}/...`` (endpoint_server/app.py), kept in ``DIR/endpoints/{endpoint}/``.
Stops on SIGINT/SIGTERM, after ``--max-lifetime`` seconds, or when ``--parent-pid`` is gone.

Every route but /health needs the key (`Authorization: Bearer <key>` or `x-endpoint-key`):
``--key``, else the environment's ``LOCAL_ENDPOINT_KEY`` (better: a command line is visible
to every user of the machine), else the one in ``--key-file`` (default
``$RETRAIN_LOCAL_DIR/endpoint.key``, ``.local/endpoint.key``), generated there (mode 0600)
when the file does not exist yet. The app reads the same file when LOCAL_ENDPOINT_KEY is unset.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from adapters.local_endpoint import KEY_FILE
from adapters.processes import process_alive
from endpoint_server.app import MIN_KEY_LENGTH
from endpoint_server.server import HOST, KEY_ENVIRONMENT, new_key, serve_forever


def default_key_file() -> Path:
    return Path(os.environ.get("RETRAIN_LOCAL_DIR") or ".local") / KEY_FILE


def key_from_file(path: Path) -> str:
    """The key in `path`; a new one written there (owner-only, 0600) when it has none."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    os.chmod(path, 0o600)  # also when the file existed empty, with other permissions
    print(f"endpoint key written to {path}", file=sys.stderr, flush=True)
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m endpoint_server", description=__doc__)
    parser.add_argument("--data-dir", required=True, help="request log and loaded models")
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument(
        "--registry-uri", default=None, help="MLflow registry URI (default: tracking)"
    )
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--max-lifetime", type=float, default=None, help="seconds, then exit")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when it is gone")
    parser.add_argument(
        "--key",
        default=None,
        help=f"the key every route but /health needs (default: ${KEY_ENVIRONMENT}, else "
        "--key-file)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="where the key is read, or generated (default: $RETRAIN_LOCAL_DIR/endpoint.key "
        "or .local/endpoint.key)",
    )
    args = parser.parse_args(argv)
    key = (
        args.key
        or os.environ.get(KEY_ENVIRONMENT)
        or key_from_file(args.key_file or default_key_file())
    )
    if len(key) < MIN_KEY_LENGTH:
        parser.error(f"the key must be at least {MIN_KEY_LENGTH} characters")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.parent_pid:

        def watch_parent() -> None:
            while not stop.is_set():
                if not process_alive(args.parent_pid):
                    stop.set()
                time.sleep(1.0)

        threading.Thread(target=watch_parent, daemon=True).start()

    def ready(url: str) -> None:
        print(f"listening on {url}", flush=True)

    serve_forever(
        args.data_dir,
        args.tracking_uri,
        args.port,
        args.registry_uri,
        args.host,
        ready,
        stop,
        args.max_lifetime,
        key=key,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
