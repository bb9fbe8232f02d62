"""The supervisor's alert: a program it gave up on (SERVICE_CRASH_LOOP, key ``crash_loop:<program>``)."""

from __future__ import annotations

import os
import socket

from common.alerts import AlertKind, Severity, new_alert, publish_in_background
from common.config import run_dir


def crash_loop_alert(program: str, code: int, fast_crashes: int) -> None:
    """Publish the alert to ``tt:stream:alerts`` from a thread (control delivers it); the supervisor goes on."""
    alert = new_alert(AlertKind.SERVICE_CRASH_LOOP, f"crash_loop:{program}",
                      f"{program} crashed {fast_crashes} times in a row; the supervisor gave up on it",
                      severity=Severity.CRITICAL, service="supervisor",
                      fields={"program": program, "exit_code": code, "fast_crashes": fast_crashes,
                              "host": socket.gethostname()})
    publish_in_background(_redis_url, alert)


def _redis_url() -> str:
    """``REDIS_URL``, else the embedded Redis's (``make up`` writes it in the run folder)."""
    return os.environ.get("REDIS_URL", "").strip() or (run_dir() / "redis_url").read_text().strip()
