"""Write tests/infra/avm_modules.json: the parameters and outputs of every Azure Verified Module
version infra/*.bicep pins, read from the modules' sources, so tests/infra can check each module
call offline (no Bicep compiler, no registry).

Source: a clone of github.com/Azure/bicep-registry-modules (a bare or `--filter=blob:none` clone
is enough). Each module release is tagged `avm/res/<group>/<name>/<x.y.z>`; at that tag the
module's folder holds `main.json`, the ARM template the registry serves for that version (the
compiled main.bicep), whose `parameters` and `outputs` are what a caller may pass and read:
    python tools/avm_snapshot.py --git-dir ~/src/bicep-registry-modules/.git
A pinned version without a tag falls back to the newest tag of the same major.minor, then to the
default branch if its version.json has that major.minor, then to the newest tag; the snapshot
records which (`resolved`), and the check reports nothing it cannot vouch for as exact.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
OUTPUT = REPO / "tests" / "infra" / "avm_modules.json"
SOURCE = "https://github.com/Azure/bicep-registry-modules"
REFERENCE = re.compile(r"'br/public:(avm/[a-z0-9/-]+):([0-9]+\.[0-9]+\.[0-9]+)'")
VERSION_TAG = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
# How deep typed object/array parameters are described (property names of property names...).
MAX_DEPTH = 6
SCALARS = ("string", "int", "bool")


def pinned_modules(infra: Path) -> list[tuple[str, str]]:
    """Every (module path, version) infra/*.bicep references, sorted."""
    found = set()
    for file in sorted(infra.rglob("*.bicep")):
        found.update(REFERENCE.findall(file.read_text()))
    return sorted(found)


class Sources:
    """Reads the module repository through git (no work tree needed)."""

    def __init__(self, git_dir: Path, default_ref: str) -> None:
        self.git_dir = git_dir
        self.default_ref = default_ref

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", f"--git-dir={self.git_dir}", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def show(self, ref: str, path: str) -> str:
        return self.git("show", f"{ref}:{path}")

    def commit(self, ref: str) -> str:
        return self.git("rev-parse", f"{ref}^{{commit}}").strip()

    def versions(self, module: str) -> list[tuple[int, ...]]:
        """The released versions of one module (its tags), oldest first."""
        names = self.git("tag", "--list", f"{module}/*").split()
        tails = [name.removeprefix(f"{module}/") for name in names]
        return sorted(
            tuple(map(int, tail.split("."))) for tail in tails if VERSION_TAG.fullmatch(tail)
        )

    def resolve(self, module: str, version: str) -> tuple[str, str]:
        """(git ref, how it was chosen) for one pinned version."""
        wanted = tuple(map(int, version.split(".")))
        released = self.versions(module)
        if wanted in released:
            return f"refs/tags/{module}/{version}", "tag"
        same_minor = [v for v in released if v[:2] == wanted[:2]]
        if same_minor:
            tag = ".".join(map(str, same_minor[-1]))
            return f"refs/tags/{module}/{tag}", f"no tag {version}: newest {tag} of the same minor"
        try:
            branch_version = json.loads(self.show(self.default_ref, f"{module}/version.json"))
        except subprocess.CalledProcessError:
            branch_version = {}
        if branch_version.get("version") == ".".join(map(str, wanted[:2])):
            return self.default_ref, f"no tag {version}: {self.default_ref}, version.json matches"
        if not released:
            raise LookupError(f"{module}: no release tag and no matching version.json")
        tag = ".".join(map(str, released[-1]))
        return f"refs/tags/{module}/{tag}", f"no tag {version} nor its minor: newest {tag}"


def _resolve_ref(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """A schema with its `$ref` (to the template's definitions) followed, keeping `nullable`."""
    seen = 0
    while "$ref" in schema and seen < 20:
        target = definitions[schema["$ref"].removeprefix("#/definitions/")]
        nullable = schema.get("nullable", False) or target.get("nullable", False)
        default = "defaultValue" in schema
        schema = {**target, "nullable": nullable}
        if default:
            schema["defaultValue"] = None
        seen += 1
    return schema


def shape(schema: dict[str, Any], definitions: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """What a value of this schema may hold: the `type` and `allowed` values of a scalar
    (string, int, bool), `properties` of a
    closed typed object (each with `required` and its own shape), `items` of a typed array;
    {} when open or untyped."""
    schema = _resolve_ref(schema, definitions)
    if depth >= MAX_DEPTH:
        return {}
    if schema.get("type") in SCALARS:
        allowed = {"allowed": schema["allowedValues"]} if "allowedValues" in schema else {}
        return {"type": schema["type"], **allowed}
    if schema.get("type") == "array" and "items" in schema:
        items = shape(schema["items"], definitions, depth + 1)
        return {"items": items} if items else {}
    closed = schema.get("additionalProperties") in (None, False)
    if schema.get("type") == "object" and "properties" in schema and closed:
        if "discriminator" in schema:
            return {}
        return {
            "properties": {
                name: {
                    "required": _required(_resolve_ref(child, definitions), child),
                    **shape(child, definitions, depth + 1),
                }
                for name, child in sorted(schema["properties"].items())
            }
        }
    return {}


def _required(resolved: dict[str, Any], declared: dict[str, Any]) -> bool:
    """Required: no default and not nullable (`param x type?` or a nullable type)."""
    has_default = "defaultValue" in declared or "defaultValue" in resolved
    return not has_default and not resolved.get("nullable", False)


def describe(template: dict[str, Any]) -> dict[str, Any]:
    """A module's parameters (required or not, and their shape) and output names."""
    definitions = template.get("definitions", {})
    parameters = {}
    for name, declared in sorted(template.get("parameters", {}).items()):
        resolved = _resolve_ref(declared, definitions)
        parameters[name] = {
            "required": _required(resolved, declared),
            **shape(declared, definitions),
        }
    return {"parameters": parameters, "outputs": sorted(template.get("outputs", {}))}


def snapshot(sources: Sources, infra: Path) -> dict[str, Any]:
    modules = {}
    for module, version in pinned_modules(infra):
        ref, resolved = sources.resolve(module, version)
        template = json.loads(sources.show(ref, f"{module}/main.json"))
        modules[f"{module}:{version}"] = {
            "ref": ref.removeprefix("refs/tags/"),
            "commit": sources.commit(ref),
            "resolved": resolved,
            "templateHash": template.get("metadata", {}).get("_generator", {}).get("templateHash"),
            **describe(template),
        }
    return {
        "source": SOURCE,
        "generator": "tools/avm_snapshot.py",
        "modules": modules,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--git-dir", type=Path, required=True, help="bicep-registry-modules git dir"
    )
    parser.add_argument("--default-ref", default="HEAD", help="the branch used as last resort")
    parser.add_argument("--infra", type=Path, default=INFRA)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    result = snapshot(Sources(args.git_dir, args.default_ref), args.infra)
    args.output.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    for key, module in result["modules"].items():
        print(f"{key}: {module['ref']} ({module['resolved']}) {module['commit'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
