"""``bench compare tickwire | slots | malloc``: the in-process hand-written pieces against the library
(the hand-written sides that lost are kept in ``bench/_cmp_retired.py``).

- ``tickwire``: ingest's PriceTick bytes written field by field from memos (the retired
  ``services/ingest/tickwire.py``) against building the message (``BookState.price_tick``) and
  ``SerializeToString()``; 200 books of 10 levels a side, ticks in frames of 1, 2 (a market's two
  outcomes: the usual price_change frame) and 8 sharing one receive stamp (``tick_fN``); ``equal`` = 1
  when every tick's bytes are the same both ways.
- ``slots``: the executor's ``Slots`` against ``asyncio.Semaphore``: a burst of 1,000 tasks each
  taking a slot, holding it over 3 loop passes (an in-flight POST) and giving it back, with the
  executor's ``max_inflight`` (2,048: never full) and the tracker's 256 (most tasks wait); CPU per burst
  and the p50 / p99 wait for a slot; and a bare uncontended acquire + release.
- ``malloc``: ``mallopt`` through ctypes (control's retired ``keep_freed_memory``: ``bench.keep_freed_memory``)
  against glibc's environment variables (both, ``env``; the trim threshold alone, ``make-env``, as the
  Makefile exported it), and glibc's defaults, on the workload mallopt was added for: 1,000 list pages
  (500 rows, ~0.5 MB of JSON each) built with ``orjson.dumps``, copied once (the HttpBody / gRPC frame),
  kept in a 32-page LRU; minor page faults and CPU per page, each variant in a fresh process.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import orjson
import uvloop

from bench import keep_freed_memory, percentile
from bench._cmp_measure import pure

SIDES = ("hand", "library")
_SIDES = {"tickwire": ("tickwire", "SerializeToString"), "slots": ("Slots", "asyncio.Semaphore"),
          "malloc": ("mallopt", "env", "defaults", "make-env", "make-env+mallopt")}
KEEP_BYTES = 256 * 1024 * 1024
_MALLOC_ENV = {"env": {"MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES), "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024)},
               "make-env": {"MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)},
               "make-env+mallopt": {"MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)}}
CLEARED_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
               "GLIBC_TUNABLES")


def sides(component: str) -> tuple[str, ...]:
    """The sides of ``component``, hand-written first."""
    return _SIDES[component]


def side_env(component: str, side: str) -> dict[str, str]:
    """Environment variables a side's process starts with (the malloc variants)."""
    return _MALLOC_ENV.get(side, {}) if component == "malloc" else {}


def run(side: str, params: dict[str, Any]) -> dict[str, float]:
    """One side's metrics."""
    component = params["component"]
    scale = 20 if params.get("quick") else 1  # --quick: a smoke run
    if component == "tickwire":
        return _tickwire(side, 200_000 // scale)
    if component == "slots":
        return uvloop.run(_slots(side, params["bursts"], 200_000 // scale))
    return _malloc(side, 1000 // scale)


def _tickwire(side: str, n: int) -> dict[str, float]:
    from bench._cmp_retired import TickEncoder
    from services.ingest import clob
    from services.ingest.books import BookState
    from tradingtools.market.v1 import market_pb2 as mpb

    state = BookState()
    assets = [f"{7_000_000 + a}{'3' * 70}" for a in range(200)]
    for a, asset in enumerate(assets):
        state.track(asset)
        base = 10 + a % 70
        bids = tuple((Decimal(f"0.{base - k:02d}"), Decimal(f"{100 + k * 7}.5")) for k in range(10, 0, -1))
        asks = tuple((Decimal(f"0.{base + k:02d}"), Decimal(f"{90 + k * 3}")) for k in range(10, 0, -1))
        state.apply(clob.BookMsg(asset, f"0x{a:064x}", bids, asks, Decimal("0.01"), Decimal(f"0.{base:02d}"),
                                 1_700_000_000_000), 1_700_000_000_000)
    encode = TickEncoder(state)
    kind = mpb.TICK_KIND_PRICE_CHANGE
    stamp = 1_700_000_000_000_000_000
    out: dict[str, float] = {}
    equal = True
    for per_frame in (1, 2, 8):
        def hand(i: int, f: int = per_frame) -> bytes:
            return encode(assets[i % 200], kind, stamp + i // f)

        def library(i: int, f: int = per_frame) -> bytes:
            return state.price_tick(assets[i % 200], kind, stamp + i // f).SerializeToString()

        equal = equal and all(hand(i) == library(i) and mpb.PriceTick.FromString(hand(i)) == state.price_tick(
            assets[i % 200], kind, stamp + i // per_frame) for i in range(2000))
        out |= pure(f"tick_f{per_frame}", hand if side == "tickwire" else library, n)
    return {**out, "tick.equal": 1.0 if equal else 0.0}


class _Gate:
    def __init__(self, side: str, n: int) -> None:
        from services.executor.burst_gate import Slots

        self.impl: Any = Slots(n) if side == "Slots" else asyncio.Semaphore(n)


async def _burst(gate: Any, n: int, hold_passes: int, waits: list[int]) -> None:
    now = time.perf_counter_ns

    async def one() -> None:
        t0 = now()
        await gate.acquire()
        waits.append(now() - t0)
        try:
            for _ in range(hold_passes):
                await asyncio.sleep(0)
        finally:
            gate.release()

    await asyncio.gather(*(one() for _ in range(n)))


async def _slots(side: str, bursts: int, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, limit in (("burst_free", 2048), ("burst_256", 256)):
        gate = _Gate(side, limit).impl
        for _ in range(3):
            await _burst(gate, 1000, 3, [])
        gc.collect()
        waits: list[int] = []
        c0 = time.process_time()
        for _ in range(bursts * 5):
            await _burst(gate, 1000, 3, waits)
        out[f"{label}.cpu_us"] = round((time.process_time() - c0) / (bursts * 5) * 1e6, 1)
        waits.sort()
        out[f"{label}.wait_p50_us"] = round(percentile(waits, 50) / 1e3, 2)
        out[f"{label}.wait_p99_us"] = round(percentile(waits, 99) / 1e3, 2)
    gate = _Gate(side, 2048).impl
    c0 = time.process_time()
    for _ in range(n):
        await gate.acquire()
        gate.release()
    out["acquire_release.cpu_us"] = round((time.process_time() - c0) / n * 1e6, 3)
    return out


def _malloc(side: str, pages: int) -> dict[str, float]:
    if side.endswith("mallopt"):
        assert keep_freed_memory(KEEP_BYTES)
    rows = [{"id": f"sub_{i:08d}", "leaderProxy": "0x" + f"{i:040x}", "followerWalletId": f"w_{i}",
             "state": "SUBSCRIPTION_STATE_ACTIVE", "sizing": {"mode": "FIXED_USD", "fixedUsd": "25.00"},
             "limits": {"maxUsdPerTrade": "100.00", "maxUsdPerMarket": "500.00", "slippageBps": 150},
             "stats": {"copied": i * 3, "skipped": i, "filledUsd": f"{i * 12.5:.2f}", "realizedPnlUsd": "-3.14"},
             "createdAt": "2026-11-22T09:49:14.123456Z", "updatedAt": "2026-11-25T12:36:21.654321Z",
             "version": i, "note": "x" * 600} for i in range(500)]
    cache: OrderedDict[int, bytes] = OrderedDict()

    def page(i: int) -> None:
        rows[i % 500]["version"] = i  # every page differs
        body = orjson.dumps({"items": rows, "nextPageToken": f"t{i}"})
        framed = b"".join((b"\x00", len(body).to_bytes(4, "big"), body))  # the gRPC frame's copy
        cache[i] = framed
        if len(cache) > 32:
            cache.popitem(last=False)

    for i in range(100):
        page(i)
    gc.collect()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = pure("page", page, pages, warm=0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {**out, "page.minflt": round(faults / pages, 1), "page_bytes": float(len(cache[max(cache)]))}
