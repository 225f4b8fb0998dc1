"""The runtime harness lives in tests/harness.py (shared by every test folder)."""

from tests.harness import RecordingTrainingBackend, make_runtime, policy_yaml, pump

__all__ = ["RecordingTrainingBackend", "make_runtime", "policy_yaml", "pump"]
