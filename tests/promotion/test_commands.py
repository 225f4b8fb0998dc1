"""Commands are frozen plain data; importing the core stays cheap (no scipy at import)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from orchestrator.messages import Envelope
from promotion.commands import COMMANDS, GateCheck, StartPromotion


def test_commands_cover_every_type() -> None:
    assert set(COMMANDS) == {
        "StartPromotion", "GateCheck", "ApprovalDecision", "ApprovalTimedOut", "DeploymentReady",
        "DeploymentFailed", "RollbackRequested", "PromoteNow", "PausePromotion", "ResumePromotion",
        "EndpointDrift", "EndpointInSync",
    }  # fmt: skip


def test_commands_are_frozen_and_strict() -> None:
    command = StartPromotion(candidate_version="3")
    with pytest.raises(ValidationError):
        command.candidate_version = "4"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        StartPromotion.model_validate({"candidate_version": "3", "colour": "blue"})


def test_payload_round_trips_through_the_envelope() -> None:
    check = GateCheck(promotion_id="p", step="canary-1", check_id="p:canary-1:check:1")
    envelope = Envelope.new("GateCheck", "churn", check, promotion_id="p")
    assert envelope.payload_as(COMMANDS[envelope.type]) == check


def test_importing_the_core_does_not_import_scipy() -> None:
    code = (
        "import sys, promotion.machine, promotion.gates;"
        "sys.exit(1 if 'scipy' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
