"""Policy files: one YAML file per model in POLICY_DIR. Adding a model is adding a file.

A bad file fails at start with the file, the field and the reason (`domain.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from domain.policy import ModelPolicy, PolicyError, parse_policy


class UnknownModel(LookupError):
    """A message, request or query names a model that has no policy file."""


def policy_for(policies: Mapping[str, ModelPolicy], model: str) -> ModelPolicy:
    try:
        return policies[model]
    except KeyError:
        raise UnknownModel(f"no policy for model {model!r}") from None


def load_policy(path: Path | str) -> ModelPolicy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(path, "(file)", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(path, "(file)", f"not UTF-8 text: {exc.reason}") from exc
    return parse_policy(text, path)


def load_policies(
    folder: Path | str, *, watched_container: str | None = None
) -> dict[str, ModelPolicy]:
    """Every `*.yml` / `*.yaml` file in `folder`, by model name. Duplicate models are an error,
    and so is a `data.container` other than `watched_container` (DATA_CONTAINER, the one whose
    BlobCreated events the app takes), when it is given: that model's data would never start
    anything."""
    policies: dict[str, ModelPolicy] = {}
    for path in sorted(Path(folder).glob("*.y*ml")):
        policy = load_policy(path)
        if policy.model in policies:
            raise PolicyError(path, "model", f"model {policy.model!r} is defined twice")
        if watched_container is not None and policy.data.container != watched_container:
            raise PolicyError(
                path,
                "data.container",
                f"{policy.data.container!r} is not watched: new blobs are taken from "
                f"DATA_CONTAINER={watched_container!r}; land the data there (under "
                f"data.prefix) or set DATA_CONTAINER",
            )
        policies[policy.model] = policy
    return policies
