"""Processes named by (pid, kernel start time), so a recycled pid is never mistaken for ours."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def proc_starttime(pid: int) -> int | None:
    """The kernel start time of ``pid`` (clock ticks since boot), None when it does not exist.

    Together with the pid it names one process, so a recycled pid is never mistaken for ours.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields and fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def is_alive(pid: int, starttime: int | None) -> bool:
    """Whether the process ``pid`` that started at ``starttime`` still runs."""
    return pid > 0 and starttime is not None and proc_starttime(pid) == starttime


def terminate(pid: int, starttime: int | None, grace_s: float) -> bool:
    """SIGTERM one verified process, SIGKILL after ``grace_s``; whether it was running."""
    if not is_alive(pid, starttime):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_alive(pid, starttime):
        time.sleep(0.05)
    if is_alive(pid, starttime):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True
