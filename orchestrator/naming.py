"""Deterministic names shared by the domain and the adapters.

Deterministic names are what make effects idempotent: deploying the same version twice
targets the same deployment, so a re-dispatched effect changes nothing.
"""

from __future__ import annotations

import hashlib
import re

# Azure ML online deployment names: 3 to 32 characters, a letter first, then letters,
# digits and '-'.
DEPLOYMENT_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{2,31}$")


def deployment_name(model: str, version: str) -> str:
    """The online deployment that serves `version` of `model`, e.g. ``churn-v12``.

    Long model names are shortened with a hash suffix so the name stays unique and valid.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "model"
    if not slug[0].isalpha():
        slug = f"m-{slug}"
    version_slug = re.sub(r"[^a-z0-9]+", "-", str(version).lower()).strip("-") or "0"
    suffix = f"-v{version_slug}"
    name = f"{slug}{suffix}"
    if len(name) > 32:
        digest = hashlib.sha256(model.encode()).hexdigest()[:6]
        keep = 32 - len(suffix) - len(digest) - 1
        name = f"{slug[:keep].rstrip('-')}-{digest}{suffix}"
    if not DEPLOYMENT_NAME_PATTERN.match(name):
        raise ValueError(f"cannot derive a valid deployment name from {model!r} v{version!r}")
    return name


def is_valid_deployment_name(name: str) -> bool:
    return bool(DEPLOYMENT_NAME_PATTERN.match(name))
