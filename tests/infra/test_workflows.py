"""The GitHub Actions workflows: CI runs `make test` on every push and pull request; the azd
deploy workflow signs in with federated credentials and stores no secret."""

from __future__ import annotations

import yaml

from tests.infra.templates import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def steps(document: dict) -> list[dict]:
    return [step for job in document["jobs"].values() for step in job["steps"]]


def test_ci_runs_make_test_on_push_and_pull_request() -> None:
    ci = load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    assert any(step.get("run", "").strip() == "make test" for step in steps(ci))


def test_the_deploy_workflow_uses_federated_credentials_and_no_secret() -> None:
    text = (WORKFLOWS / "azure-dev.yml").read_text()
    deploy = load("azure-dev.yml")
    assert deploy["permissions"]["id-token"] == "write"
    runs = " ".join(step.get("run", "") for step in steps(deploy))
    assert "--federated-credential-provider github" in runs
    assert "azd provision --no-prompt" in runs and "azd deploy --no-prompt" in runs
    assert "secrets." not in text
