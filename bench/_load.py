"""Open-loop request load and CPU accounting for the request benchmarks: request *i* is due at
``t0 + i / rate`` whatever happened to the others, and each process's CPU is read from ``/proc``."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench import process_cpu_s


async def paced(rate: float, count: int, one: Callable[[float], Coroutine[Any, Any, Any]], *,
                spin_s: float = 0.0) -> list[Any]:
    """Start ``one(due_time)`` ``count`` times at ``rate`` per second, open loop; gather the results.

    The client's cyclic garbage collector is off meanwhile (collected before and after): a full
    collection over thousands of live tasks pauses this loop for tens of milliseconds, which would
    be measured as the service's latency. ``spin_s``: sleep until that long before each due time,
    then yield to the loop until it is due. The loop's timers have millisecond granularity, so a
    plain sleep starts a request ~1 ms late (p50; 2.5 ms at p99), which counts as latency; spinning
    costs CPU, so it suits slow rates only.
    """
    gc.collect()
    gc.disable()
    try:
        start = time.monotonic() + 0.05
        tasks: list[asyncio.Task[Any]] = []
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic() - spin_s
            if delay > 0:
                await asyncio.sleep(delay)
            while time.monotonic() < due:  # noqa: ASYNC110 - a busy wait on the clock, no event to wait for
                await asyncio.sleep(0)
            tasks.append(asyncio.create_task(one(due)))
        return await asyncio.gather(*tasks)
    finally:
        gc.enable()
        gc.collect()


class Errors(Exception):
    """A request answered something other than 200."""


CpuSnapshot = Callable[[], dict[str, float]]


def cpu_meter(pids: dict[str, int]) -> CpuSnapshot:
    """CPU seconds used so far by each named process (the bench's own included as ``client``)."""
    def snapshot() -> dict[str, float]:
        out = {"client": time.process_time()}
        for name, pid in pids.items():
            used = process_cpu_s(pid)
            if used is not None:
                out[name] = used
        return out
    return snapshot


def cpu_per_request_us(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU microseconds per request of each process between two snapshots."""
    return {name: round((after[name] - before[name]) * 1e6 / max(1, requests), 1)
            for name in before if name in after}
