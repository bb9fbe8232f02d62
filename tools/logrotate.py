"""Size-based rotation of the local stack's log files (``.run/logs/*.log``), run by the supervisor.

Every writer (each program, the supervisor itself, Envoy's access log) opened its file once with
``O_APPEND`` and keeps the descriptor, so a file is rotated by copy and truncate: past
``TT_STACK_LOG_MAX_MB`` it is copied to ``<name>.log.1`` (older copies shift to ``.2`` … up to
``TT_STACK_LOG_KEEP``, the oldest is dropped), lines written meanwhile are copied too, and the file is
truncated in place; the writers' next lines land at its start. Only a line written in the instant between
the last read and the truncate can be lost. ``make logs`` follows a truncated file from its start.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from common.config import env_decimal, env_int

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogRotation:
    """When a log file is rotated and how many rotated copies are kept."""

    max_bytes: int = 50 * MIB
    keep: int = 5

    @property
    def enabled(self) -> bool:
        """False when ``TT_STACK_LOG_MAX_MB`` is 0 (files grow without bound)."""
        return self.max_bytes > 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LogRotation:
        """``TT_STACK_LOG_MAX_MB`` (50; 0 = never rotate) and ``TT_STACK_LOG_KEEP`` (5)."""
        max_mb = env_decimal(env, "TT_STACK_LOG_MAX_MB", Decimal(50), minimum=Decimal(0))
        return cls(max_bytes=int(max_mb * MIB), keep=env_int(env, "TT_STACK_LOG_KEEP", 5, minimum=1, maximum=100))


def rotated(path: Path, index: int) -> Path:
    """The ``index``-th rotated copy of ``path`` (1 is the newest)."""
    return path.with_name(f"{path.name}.{index}")


def rotate(path: Path, keep: int) -> None:
    """Shift the rotated copies, copy ``path`` to ``.1`` and truncate it in place."""
    rotated(path, keep).unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        older = rotated(path, index)
        if older.exists():
            os.replace(older, rotated(path, index + 1))
    with path.open("rb") as src, rotated(path, 1).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        while chunk := src.read(1024 * 1024):  # what was appended during the copy
            dst.write(chunk)
        os.truncate(path, 0)


def rotate_large(logs_dir: Path, rotation: LogRotation) -> list[Path]:
    """Rotate every ``*.log`` in ``logs_dir`` larger than the limit; returns the files rotated."""
    if not rotation.enabled:
        return []
    done: list[Path] = []
    for path in sorted(logs_dir.glob("*.log")):
        try:
            if path.stat().st_size <= rotation.max_bytes:
                continue
            rotate(path, rotation.keep)
        except FileNotFoundError:
            continue
        done.append(path)
    return done
