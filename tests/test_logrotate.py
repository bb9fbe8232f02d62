"""The development supervisor rotates its log files by size (copy and truncate; writers keep appending)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError, project_root
from tests.helpers import eventually_sync
from tools.logrotate import MIB, LogRotation, rotate, rotate_large
from tools.supervisor import Program, programs_to_json


@pytest.mark.parametrize(("env", "expected"), [
    ({}, LogRotation(max_bytes=50 * MIB, keep=5)),
    ({"TT_STACK_LOG_MAX_MB": "0"}, LogRotation(max_bytes=0, keep=5)),
    ({"TT_STACK_LOG_MAX_MB": "0.5", "TT_STACK_LOG_KEEP": "2"}, LogRotation(max_bytes=MIB // 2, keep=2)),
])
def test_rotation_settings(env: dict[str, str], expected: LogRotation) -> None:
    assert LogRotation.from_env(env) == expected


@pytest.mark.parametrize("env", [{"TT_STACK_LOG_MAX_MB": "-1"}, {"TT_STACK_LOG_MAX_MB": "big"},
                                 {"TT_STACK_LOG_KEEP": "0"}])
def test_invalid_rotation_settings_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        LogRotation.from_env(env)


def test_rotate_shifts_the_copies_and_an_appending_writer_continues_at_the_start(tmp_path: Path) -> None:
    log = tmp_path / "router.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # as the supervisor opens it ("ab")
    try:
        for generation in range(4):
            os.write(fd, f"generation {generation}\n".encode() * 10)
            rotate(log, keep=2)
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b"after\n"  # no hole of NULs where the old content was
    assert (tmp_path / "router.log.1").read_text() == "generation 3\n" * 10
    assert (tmp_path / "router.log.2").read_text() == "generation 2\n" * 10
    assert not (tmp_path / "router.log.3").exists()


def test_rotate_large_takes_only_files_past_the_limit(tmp_path: Path) -> None:
    (tmp_path / "big.log").write_bytes(b"x" * 101)
    (tmp_path / "small.log").write_bytes(b"x" * 100)
    (tmp_path / "big.log.1").write_bytes(b"old")  # a rotated copy is never rotated itself
    assert rotate_large(tmp_path, LogRotation(max_bytes=100, keep=3)) == [tmp_path / "big.log"]
    assert rotate_large(tmp_path, LogRotation(max_bytes=0, keep=3)) == []
    assert (tmp_path / "big.log.2").read_bytes() == b"old" and (tmp_path / "big.log").read_bytes() == b""


CHATTY = "import itertools, time\nfor i in itertools.count():\n    print(f'line {i:08d} ' + 'x' * 180, flush=True)\n" \
         "    time.sleep(0.0005)\n"


@pytest.mark.integration
def test_the_supervisor_rotates_a_chatty_programs_log(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = tmp_path / "programs.json"
    spec.write_text(programs_to_json([Program("chatty", (sys.executable, "-c", CHATTY))]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(TT_STACK_LOG_MAX_MB="0.05", TT_STACK_LOG_KEEP="2", TT_STACK_STOP_GRACE_S="2")
    sup = subprocess.Popen([sys.executable, "-m", "tools.supervisor", str(spec), str(run)], cwd=project_root(),
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    logs = run / "logs"
    try:
        eventually_sync(lambda: (logs / "chatty.log.2").exists(), timeout_s=30, message="two rotations")
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=20)
    assert not (logs / "chatty.log.3").exists()
    for path in (logs / "chatty.log.2", logs / "chatty.log.1"):
        data = path.read_bytes()
        assert b"\0" not in data
        numbers = [int(line.split()[1]) for line in data.decode().splitlines() if line.startswith("line ")]
        assert numbers and numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # whole, in order
