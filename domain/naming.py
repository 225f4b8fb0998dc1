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
MAX_LENGTH = 32

# A model name kept as it is: lowercase letters, digits and single inner '-', a letter first.
_PLAIN_MODEL = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
# A version kept as it is. No '-' in it, so the last '-v' of a plain name always separates
# the model from the version: two plain names are equal only for equal (model, version).
_PLAIN_VERSION = re.compile(r"^[a-z0-9]+$")
_VERSION_KEEP = 10  # at most this many version characters in a shortened name
_DIGEST_CHARS = 6


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def deployment_name(model: str, version: str) -> str:
    """The online deployment that serves `version` of `model`, e.g. ``churn-v12``.

    A model name that is already a lowercase slug with a plain version (``[a-z0-9]+``) is kept
    as it is while the result fits in 32 characters. Anything else (uppercase, '_' or '.',
    a digit first, a long name, a version with other characters) is slugged and shortened, and
    gets a short hash (6 hex digits) of what was lost, so distinct inputs keep distinct names
    but for a hash collision (or a plain name that spells out another's hashed form):
    ``Churn_Model`` v1 -> ``churn-model-431ffb-v1``, never ``churn-model-v1``.
    """
    version = str(version)
    slug = _slug(model) or "model"
    if not slug[0].isalpha():
        slug = f"m-{slug}"
    version_slug = _slug(version) or "0"
    plain_version = bool(_PLAIN_VERSION.match(version))
    name = f"{slug}-v{version_slug}"
    if not (_PLAIN_MODEL.match(model) and plain_version and len(name) <= MAX_LENGTH):
        version_part = version_slug[:_VERSION_KEEP].rstrip("-")
        # When the version is kept whole, the model alone needs the hash (and long plain
        # names keep the hash they always had); otherwise the version is hashed too.
        whole_version = plain_version and version_part == version
        source = model if whole_version else f"{model}\x00{version}"
        digest = hashlib.sha256(source.encode()).hexdigest()[:_DIGEST_CHARS]
        suffix = f"-v{version_part}"
        keep = MAX_LENGTH - len(suffix) - len(digest) - 1
        name = f"{slug[:keep].rstrip('-')}-{digest}{suffix}"
    if not DEPLOYMENT_NAME_PATTERN.match(name):  # a guard: the construction above is valid
        raise ValueError(f"cannot derive a valid deployment name from {model!r} v{version!r}")
    return name


def is_valid_deployment_name(name: str) -> bool:
    return bool(DEPLOYMENT_NAME_PATTERN.match(name))
