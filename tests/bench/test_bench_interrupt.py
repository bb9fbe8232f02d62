"""``make bench`` stopped by Ctrl-C or ``timeout``/``kill`` stops the stack it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import eventually_sync

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line or environment mentions ``text`` (the stack's services carry
    their run folder in ``TT_RUN_DIR``)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_bench_stops_its_stack(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bench", "pipeline", "--quick", "--only", "a", "--no-save"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run_dir = None
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"stack up in .*\(run folder (.+)\)", line)
            if m:
                run_dir = m.group(1)
                break
        assert run_dir, "the bench never reported its stack up"
        assert _processes_naming(run_dir)  # the supervisor and the embedded servers run from it
        proc.send_signal(sig)
        assert proc.wait(timeout=90) != 0
        eventually_sync(lambda: not _processes_naming(run_dir), timeout_s=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
