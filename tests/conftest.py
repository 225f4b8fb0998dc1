"""Shared fixtures. Azurite is real: one emulator per test session (per xdist worker).

Every test that needs Azurite carries the `azurite` marker: the ones whose fixtures reach the
`azurite` fixture (`make_runtime`, `flow_settings`, `make_host`, ...) get it here, at
collection; the few that start an emulator themselves are marked where they are written (or in
STARTS_AZURITE below). `make unit` runs `-m "not azurite"` with RETRAIN_NO_AZURITE=1, and
then any attempt to start Azurite fails the test, so a test that needs it and is not marked
shows up at once instead of starting one quietly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from adapters.azurite import Azurite, ensure_azurite
from tests.endpoint_fixtures import registry, server
from tests.harness import make_runtime

__all__ = ["make_runtime", "registry", "server"]  # the fixtures, for every test folder

NO_AZURITE = "RETRAIN_NO_AZURITE"

# Tests that start Azurite without the fixture, in files this conftest does not own: the demo
# runs devhost, which starts its own emulator.
STARTS_AZURITE = ("tests/devhost/demo/",)


def azurite_forbidden() -> bool:
    return os.environ.get(NO_AZURITE, "") not in ("", "0")


def refuse_azurite(what: str) -> NoReturn:
    raise pytest.fail.Exception(
        f"{what} while {NO_AZURITE}=1 (`make unit`, which runs without Azurite): mark this "
        "test `azurite`, or let it reach the emulator through the `azurite` fixture",
        pytrace=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    if not azurite_forbidden():
        return
    # Every way a test process starts an emulator goes through `azurite_binary()`
    # (start_azurite, ensure_azurite, devhost): without Azurite, it refuses.
    import adapters.azurite as azurite_module

    def no_binary() -> Path:
        refuse_azurite("Azurite was about to be started")

    azurite_module.azurite_binary = no_binary


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reaches_fixture = "azurite" in getattr(item, "fixturenames", ())
        if reaches_fixture or item.nodeid.startswith(STARTS_AZURITE):
            item.add_marker(pytest.mark.azurite)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    if azurite_forbidden():
        refuse_azurite("the `azurite` fixture was requested")
    # AZURITE_CONNECTION_STRING lets a developer point the suite at one already running.
    emulator = ensure_azurite(os.environ.get("AZURITE_CONNECTION_STRING"))
    yield emulator
    emulator.stop()


@pytest.fixture
def unique_name() -> str:
    """A fresh container/queue name so tests sharing one Azurite never see each other."""
    return f"t{uuid.uuid4().hex[:20]}"
