import os
import subprocess
import sys

from adapters.processes import process_alive


def test_a_running_process_is_alive_and_an_ended_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)
    assert process_alive(os.getpid())


def test_what_is_not_a_pid_is_not_alive() -> None:
    # Records from older versions may hold None, a string, or 0 (which would signal our group).
    for not_a_pid in (None, "123", 0, -1, True, 1.5):
        assert not process_alive(not_a_pid)
