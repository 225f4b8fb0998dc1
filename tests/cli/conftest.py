"""The CLI runs against a real runtime on Azurite: reuse the service tests' fixtures."""

from tests.service.conftest import make_runtime  # noqa: F401  (a fixture)
