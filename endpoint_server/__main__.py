"""``python -m endpoint_server --data-dir DIR --tracking-uri URI [--port N]``.

Prints ``listening on http://127.0.0.1:PORT`` once it serves. Stops on SIGINT/SIGTERM, after
``--max-lifetime`` seconds, or when ``--parent-pid`` is gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from endpoint_server.server import HOST, serve_forever


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.parent_pid:

        def watch_parent() -> None:
            while not stop.is_set():
                if not _alive(args.parent_pid):
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
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
