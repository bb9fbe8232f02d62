"""Timing helpers of ``bench compare``'s sides: CPU per operation and latency percentiles."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable

from bench import percentile


def _metrics(name: str, cpu_s: float, lat_ns: list[int], ops: int) -> dict[str, float]:
    lat = sorted(lat_ns)
    return {f"{name}.cpu_us": round(cpu_s / ops * 1e6, 2),
            f"{name}.p50_us": round(percentile(lat, 50) / 1e3, 1),
            f"{name}.p99_us": round(percentile(lat, 99) / 1e3, 1)}


async def sequential(name: str, op: Callable[[int], Awaitable[object]], n: int, *, warm: int = 200
                     ) -> dict[str, float]:
    """``op(i)`` awaited ``n`` times one after another (after ``warm`` unmeasured calls): this process's
    CPU per call and the p50 / p99 of each call's wall time."""
    for i in range(warm):
        await op(n + i)
    gc.collect()
    lat: list[int] = []
    now = time.perf_counter_ns
    c0 = time.process_time()
    for i in range(n):
        t0 = now()
        await op(i)
        lat.append(now() - t0)
    return _metrics(name, time.process_time() - c0, lat, n)


def pure(name: str, op: Callable[[int], object], n: int, *, warm: int = 1000) -> dict[str, float]:
    """A synchronous ``op(i)`` called ``n`` times: CPU per call (latency = CPU: nothing waits)."""
    for i in range(warm):
        op(i)
    gc.collect()
    c0 = time.process_time()
    for i in range(n):
        op(i)
    return {f"{name}.cpu_us": round((time.process_time() - c0) / n * 1e6, 3)}
