"""The host key that FUNCTION and ADMIN level HTTP functions require."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

KEY_ENVIRONMENT_VARIABLE = "DEVHOST_FUNCTION_KEY"
DEFAULT_KEY_FILE = Path(".local") / "function-key"


def resolve_function_key(
    explicit: str | None, environ: Mapping[str, str], key_file: Path
) -> tuple[str, str]:
    """(key, where it came from): the argument, DEVHOST_FUNCTION_KEY, the key file, or new.

    A new key is saved to the key file (mode 600) so it stays the same across restarts.
    """
    if explicit:
        return explicit, "argument"
    if environ.get(KEY_ENVIRONMENT_VARIABLE):
        return environ[KEY_ENVIRONMENT_VARIABLE], KEY_ENVIRONMENT_VARIABLE
    if key_file.exists():
        saved = key_file.read_text(encoding="utf-8").strip()
        if saved:
            return saved, str(key_file)
    key = secrets.token_urlsafe(32)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    os.chmod(key_file, 0o600)
    key_file.write_text(key + "\n", encoding="utf-8")
    return key, f"{key_file} (new)"
