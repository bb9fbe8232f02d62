"""Benchmarks (``make bench``): each ``bench/<name>.py`` with a ``main(argv) -> int`` is one benchmark.

Shared helpers for them live here: percentiles, the machine description and result files.
"""

from __future__ import annotations

import json
import os
import platform
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


def save_results(name: str, data: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``data`` (plus the machine description and time) to ``results/<name>-<utc time>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    body = {"bench": name, "time": stamp, "machine": machine(), **data}
    path = directory / f"{name}-{stamp}.json"
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
