"""The Functions app imports the pure rules and the ports: they must stay light."""

from __future__ import annotations

import json
import subprocess
import sys

from orchestrator.settings import APP_ROOT

HEAVY = ["azure.ai.ml", "mlflow", "sklearn", "pandas", "azure.storage.blob"]


def test_rules_and_ports_import_nothing_heavy() -> None:
    script = (
        "import json, sys; "
        "import retrain.decide, domain.policy, orchestrator.ports, pipelines.contract; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=APP_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(loaded) == []
