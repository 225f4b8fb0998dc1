"""tools/avm_snapshot.py, which writes the vendored tests/infra/avm_modules.json: the snapshot
matches what infra/ pins, and the generator reads module sources right (on a small git
repository laid out like Azure/bicep-registry-modules, built here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.infra.templates import AVM_SNAPSHOT, INFRA
from tools import avm_snapshot

MODULE = "avm/res/demo/thing"


def test_the_snapshot_holds_exactly_the_versions_infra_pins() -> None:
    snapshot = json.loads(AVM_SNAPSHOT.read_text())
    pinned = {f"{path}:{version}" for path, version in avm_snapshot.pinned_modules(INFRA)}
    assert len(pinned) >= 10
    assert set(snapshot["modules"]) == pinned, "run tools/avm_snapshot.py (docs/deploy.md)"
    for key, module in snapshot["modules"].items():
        assert len(module["commit"]) == 40, key
        assert module["parameters"] and module["outputs"], key


TEMPLATE = {
    "definitions": {
        "skuType": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "allowedValues": ["Basic", "Standard"]},
                "capacity": {"type": "int", "nullable": True},
            },
        },
        "openType": {"type": "object", "properties": {}, "additionalProperties": True},
        "lockType": {
            "type": "object",
            "nullable": True,
            "properties": {"kind": {"type": "string"}},
        },
    },
    "parameters": {
        "name": {"type": "string"},
        "location": {"type": "string", "defaultValue": "[resourceGroup().location]"},
        "tags": {"type": "object", "nullable": True},
        "sku": {"$ref": "#/definitions/skuType"},
        "lock": {"$ref": "#/definitions/lockType"},
        "extra": {"$ref": "#/definitions/openType", "nullable": True},
        "queues": {"type": "array", "items": {"$ref": "#/definitions/skuType"}, "nullable": True},
    },
    "outputs": {"resourceId": {"type": "string"}, "name": {"type": "string"}},
}


def test_describe_reads_required_parameters_their_shapes_and_outputs() -> None:
    described = avm_snapshot.describe(TEMPLATE)
    parameters = described["parameters"]
    required = {name for name, parameter in parameters.items() if parameter["required"]}
    # No default and not nullable; a type declared nullable (`lockType?`) makes it optional.
    assert required == {"name", "sku"}
    assert parameters["sku"]["properties"] == {
        "capacity": {"required": False, "type": "int"},
        "name": {"required": True, "type": "string", "allowed": ["Basic", "Standard"]},
    }
    assert parameters["queues"]["items"]["properties"] == parameters["sku"]["properties"]
    assert "properties" not in parameters["extra"]  # open: any property may be given
    assert "properties" not in parameters["tags"]
    assert described["outputs"] == ["name", "resourceId"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _release(repo: Path, version: str, output: str, tag: bool = True) -> None:
    """Commit the module at `version` (its main.json declaring one output) and tag it."""
    folder = repo / MODULE
    folder.mkdir(parents=True, exist_ok=True)
    template = {"parameters": {"name": {"type": "string"}}, "outputs": {output: {"type": "string"}}}
    (folder / "main.json").write_text(json.dumps(template))
    minor = ".".join(version.split(".")[:2])
    (folder / "version.json").write_text(json.dumps({"version": minor}))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", version)
    if tag:
        _git(repo, "tag", f"{MODULE}/{version}")


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    repo = tmp_path / "bicep-registry-modules"
    repo.mkdir()
    _git(repo, "init", "-q")
    _release(repo, "0.2.0", "v020")
    _release(repo, "0.2.1", "v021")
    _release(repo, "0.3.0", "v030")
    _release(repo, "0.4.0", "branch", tag=False)  # on the branch, not released yet
    return repo / ".git"


@pytest.mark.parametrize(
    ("pinned", "output", "how"),
    [
        ("0.2.0", "v020", "tag"),
        ("0.2.7", "v021", "newest 0.2.1 of the same minor"),
        ("0.4.2", "branch", "version.json matches"),
        ("0.9.0", "v030", "newest 0.3.0"),
    ],
    ids=["tag", "same-minor", "branch", "newest"],
)
def test_a_pinned_version_is_read_from_its_tag_or_the_nearest_release(
    registry: Path, tmp_path: Path, pinned: str, output: str, how: str
) -> None:
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "main.bicep").write_text(f"module thing 'br/public:{MODULE}:{pinned}' = {{}}\n")
    result = avm_snapshot.snapshot(avm_snapshot.Sources(registry, "HEAD"), infra)
    module = result["modules"][f"{MODULE}:{pinned}"]
    assert module["outputs"] == [output]
    assert how in module["resolved"]
    assert module["parameters"] == {"name": {"required": True, "type": "string"}}
    commit = _git(registry.parent, "rev-parse", f"{module['ref']}^{{commit}}").strip()
    assert module["commit"] == commit
