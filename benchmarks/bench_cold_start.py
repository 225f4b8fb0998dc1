"""Cold start: `import function_app` next to a bare FunctionApp with as many functions.

Each import runs in a fresh interpreter (what the host does on a cold start), alternating
the two, and the medians are compared. The bare app registers as many functions (HTTP
routes with empty bodies), so the ratio is what our code adds to the azure-functions floor.
Measured twice: as a plain import, and as a Functions host makes it (FUNCTIONS_WORKER_RUNTIME
and the app settings of local.settings.sample.json set), where function_app also checks the
settings. Aim: <= 1.5 for both.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE_APP = textwrap.dedent(
    """
    import azure.functions as func
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for n in range({count}):
        def handler(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("ok")
        handler.__name__ = f"f{{n}}"
        app.route(route=f"r{{n}}")(handler)
    """
)

TIMED = "import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"


AIM = 1.5

# What a Functions host gives the worker: the app settings (here the local sample's, which
# include FUNCTIONS_WORKER_RUNTIME). Under a host, function_app checks them as it is imported.
UNDER_HOST = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"] | {
    "FUNCTIONS_WORKER_RUNTIME": "python"
}


def import_seconds(statement: str, environment: dict[str, str] | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "FUNCTIONS_WORKER_RUNTIME"}
    result = subprocess.run(
        [sys.executable, "-c", TIMED.format(statement=statement)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env | (environment or {}),
    )
    return float(result.stdout.strip().splitlines()[-1])


def main(rounds: int = 15) -> float:
    import function_app

    count = len(function_app.app._function_builders)  # the functions the app declares
    bare = BARE_APP.format(count=count)
    ours, hosted, floor = [], [], []
    for _ in range(rounds):
        ours.append(import_seconds("import function_app"))
        hosted.append(import_seconds("import function_app", UNDER_HOST))
        floor.append(import_seconds(f"exec({bare!r})"))
    ours_median, floor_median = statistics.median(ours), statistics.median(floor)
    hosted_median = statistics.median(hosted)
    ratio, hosted_ratio = ours_median / floor_median, hosted_median / floor_median
    print(f"import function_app ({count} functions)   median {ours_median * 1000:7.1f} ms")
    print(f"  ... under a host (settings checked) median {hosted_median * 1000:7.1f} ms")
    print(f"bare FunctionApp, {count} functions        median {floor_median * 1000:7.1f} ms")
    print(f"cold start ratio (ours / bare): {ratio:.2f}  (aim: <= {AIM})")
    print(
        f"cold start ratio under a host (ours / bare): {hosted_ratio:.2f}  (aim: <= {AIM}; "
        f"{'met' if hosted_ratio <= AIM else 'NOT met'})"
    )
    return ratio


if __name__ == "__main__":
    main()
