"""The layering is enforced, not hoped: the import-linter contracts in pyproject.toml hold on
the tree, fail on a tree that breaks them, and one function builds the Azure credential."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
    "root_packages"
]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_tree(target: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", target)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target


def test_every_contract_holds_on_the_tree() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("domain/naming.py", "import orchestrator.ports", "The pure packages"),
        ("promotion/gates.py", "import azure.storage.blob", "The pure packages"),
        ("retrain/decide.py", "from promotion import machine", "Layers"),
        ("orchestrator/handlers.py", "from adapters import blob_state", "The service layer"),
        ("adapters/events.py", "from orchestrator.outbox import Outbox", "Adapters implement"),
    ],
)
def test_a_broken_layer_is_caught(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    tree = copy_tree(tmp_path)
    path = tree / module
    # Inside a function, as the app's lazy imports are: those count too.
    path.write_text(path.read_text() + f"\n\ndef _sneaky() -> None:\n    {bad_import}\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def test_one_function_builds_the_azure_credential() -> None:
    builders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", None))
                    == "DefaultAzureCredential"
                ):
                    builders.append(str(path.relative_to(ROOT)))
    assert builders == ["adapters/azure_credential.py"]
