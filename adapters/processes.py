"""Whether a local process still runs (devhost's state file, the local endpoint's parent
watch, the local runner's jobs)."""

from __future__ import annotations

import os


def process_alive(pid: object) -> bool:
    """True when `pid` names a running process, ours or another user's; False for anything
    that is not a positive int (a record written by an older version, say)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True
