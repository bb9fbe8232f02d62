"""Band feed tests' shared pieces: a real band feed following a gate, a slow Redis, an old guard's narrowed band."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from common.fastredis import FastRedis
from services.guard.adapters.band_publisher import BandPublisher
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.bandfeed import BandFeed
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tests.helpers import eventually
from tradingtools.market.v1 import market_pb2 as mpb

A = "asset-a"
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


class SlowPipelines:
    """Wraps a Redis client: its pipelines' ``execute`` takes ``delay_s`` longer; everything else is the client's."""

    def __init__(self, client: Any, delay_s: float) -> None:
        self._client = client
        self._delay_s = delay_s

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._client.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def slow_execute(*a: Any, **kw: Any) -> Any:
            await asyncio.sleep(self._delay_s)
            return await execute(*a, **kw)

        pipe.execute = slow_execute
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@asynccontextmanager
async def following(redis: Any, gate: TickGate) -> AsyncIterator[BandFeed]:
    """Ingest's real band feed keeping ``gate`` in line with the bands in ``redis`` while in the block."""
    feed = BandFeed(redis, gate, lambda _assets: None, poll_s=0.05)
    task = asyncio.create_task(feed.run())
    try:
        yield feed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def old_guards_narrowed_band(fast: FastRedis, gate: TickGate) -> int:
    """The old guard's band on A (a trailing stop, 10 %, activating at 0.52: hi 0.52), narrowed by the 0.53 it
    logged and never read to (0.477, 0.53]: the 0.52 after it is left out. Returns the stamp to go on from."""
    engine = Engine()
    engine.upsert(TriggerSpec("s", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=Decimal("10"),
                              activation_price=Decimal("0.52"), high_water_mark=Decimal(0)))
    old = BandPublisher(fast, lambda: engine, lambda: 1, lease_s=5.0)
    await eventually(lambda: gate.stats.loads >= 1)  # the feed has subscribed
    await old.step()
    # read whole twice: at the feed's start, and for the write's message (a reset): nothing is in flight after
    await eventually(lambda: gate.stats.loads >= 2 and gate.meta is not None and gate.meta.epoch == old.epoch
                     and A in gate.bands)
    now = time.time_ns()
    assert gate.admit(A, PRICE, top("0.50"), now)  # the asset's first tick
    assert gate.admit(A, PRICE, top("0.53"), now + MS)  # logged: the old guard stops before reading it
    assert not gate.admit(A, PRICE, top("0.52"), now + 2 * MS)  # inside the narrowed band
    return now + 3 * MS
