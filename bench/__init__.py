"""Benchmarks (``make bench``): each ``bench/<name>.py`` with a ``main(argv) -> int`` is one benchmark.

Shared helpers for them live here: percentiles, the machine description and result files.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (``pct`` in (0, 100])."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-pct * len(sorted_values) // 100)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Count, p50, p90, p99, p99.9, max and mean of latencies in milliseconds."""
    values = sorted(samples_ms)
    n = len(values)
    return {
        "n": n,
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "p99_9_ms": round(percentile(values, 99.9), 3),
        "max_ms": round(values[-1], 3) if values else float("nan"),
        "mean_ms": round(sum(values) / n, 3) if n else float("nan"),
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "nproc": nproc,
        "cpu_model": model or platform.processor(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "commit": commit,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def save_results(name: str, data: Mapping[str, Any], directory: Path = RESULTS_DIR, *,
                 baseline: bool = True) -> Path:
    """Write ``data`` (plus the machine description and time) as a result of benchmark ``name``.

    A full run replaces the benchmark's one current baseline, ``results/<name>.json`` (kept in git, so its
    history is the file's history). A partial or quick run (``baseline=False``) goes to
    ``results/runs/<name>-<utc time>.json``, which git ignores.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    body = {"bench": name, "time": stamp, "machine": machine(), **data}
    path = directory / f"{name}.json" if baseline else directory / "runs" / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def print_table(rows: Mapping[str, Mapping[str, float]], target_p99_ms: float | None = None) -> None:
    """Percentile table, one row per measurement."""
    print(f"{'measurement':<22}{'n':>7}{'p50 ms':>11}{'p90 ms':>11}{'p99 ms':>11}{'p99.9 ms':>12}{'max ms':>11}",
          flush=True)
    for label, s in rows.items():
        verdict = ""
        if target_p99_ms is not None:
            verdict = "  ok" if s["p99_ms"] <= target_p99_ms else f"  OVER {target_p99_ms:g} ms p99"
        print(f"{label:<22}{int(s['n']):>7}{s['p50_ms']:>11.2f}{s['p90_ms']:>11.2f}{s['p99_ms']:>11.2f}"
              f"{s['p99_9_ms']:>12.2f}{s['max_ms']:>11.2f}{verdict}", flush=True)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def address() -> str:
    """A fresh random 0x + 40 hex proxy address."""
    return "0x" + secrets.token_hex(20)


def memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of process ``pid`` in MB (empty when it is gone)."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        return {}
    return out


def storage_pids(run_dir: Path) -> dict[str, list[int]]:
    """PostgreSQL (postmaster and backends) and Redis processes of a stack whose files are under ``run_dir``."""
    marker = str(run_dir.resolve())
    redis_url = run_dir / "redis_url"
    url = redis_url.read_text().strip() if redis_url.exists() else ""
    redis_port = url.rsplit(":", 1)[-1].split("/")[0] if url.startswith("redis://") else "-"
    postmasters: list[int] = []
    found: dict[str, list[int]] = {"postgres": [], "redis": []}
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "redis-server" in cmdline and f":{redis_port}" in cmdline:
            found["redis"].append(int(entry.name))
        elif marker in cmdline and "postgres" in cmdline:
            postmasters.append(int(entry.name))
    found["postgres"] = postmasters + [pid for pid, ppid in parents.items() if ppid in postmasters]
    if url.startswith("unix://"):  # the embedded Redis on a unix socket: its pid file lies beside the socket
        pidfile = Path(url[len("unix://"):].split("?", 1)[0]).parent / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            found["redis"].append(int(pidfile.read_text().strip()))
    return found


class CpuMeter:
    """CPU seconds of named process groups between :meth:`start` and :meth:`stop` (children started later count
    from zero; processes that ended are lost, so keep phases short)."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.begin: dict[int, float] = {}

    def start(self) -> None:
        """Take the first reading."""
        self.begin = {pid: process_cpu_s(pid) or 0.0 for pids in self.groups.values() for pid in pids}

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since :meth:`start`."""
        return {name: round(sum((process_cpu_s(pid) or 0.0) - self.begin.get(pid, 0.0) for pid in pids), 3)
                for name, pids in self.groups.items()}


# The internal token of the services a benchmark starts itself (not a stack's: ``make up`` generates that one).
INTERNAL_TOKEN = "be" * 32


def internal_env() -> dict[str, str]:
    """The environment variable that gives a service a benchmark starts the benchmark's internal token."""
    return {"TT_INTERNAL_TOKEN": INTERNAL_TOKEN}


def internal_security() -> Any:
    """The benchmark's :class:`common.grpcauth.GrpcSecurity` (its stand-in servers and its channels)."""
    from common.config import Secret
    from common.grpcauth import GrpcSecurity

    return GrpcSecurity((Secret(INTERNAL_TOKEN),))


def keep_freed_memory(keep_bytes: int = 256 * 1024 * 1024) -> bool:
    """``mallopt`` in this process: keep up to ``keep_bytes`` freed at the heap top and serve blocks up to
    min(keep, 32 MiB) from the heap (what the Makefile's ``MALLOC_TRIM_THRESHOLD_`` and
    ``MALLOC_MMAP_THRESHOLD_`` give a process at its start). False off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is None:
        return False
    trim, mmap = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    return bool(mallopt(trim, ctypes.c_int(min(keep_bytes, 2**31 - 1)))
                and mallopt(mmap, ctypes.c_int(min(keep_bytes, 32 * 1024 * 1024))))
