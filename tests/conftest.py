"""Shared fixtures. Azurite is real: one emulator per test session (per xdist worker)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from adapters.azurite import Azurite, ensure_azurite
from tests.harness import make_runtime

__all__ = ["make_runtime"]  # the fixture, for every test folder


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    # AZURITE_CONNECTION_STRING lets a developer point the suite at one already running.
    emulator = ensure_azurite(os.environ.get("AZURITE_CONNECTION_STRING"))
    yield emulator
    emulator.stop()


@pytest.fixture
def unique_name() -> str:
    """A fresh container/queue name so tests sharing one Azurite never see each other."""
    return f"t{uuid.uuid4().hex[:20]}"
