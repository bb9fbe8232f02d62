"""Two guard processes writing ``tt:guard:bands`` (a rollout, or an old process still writing after a new one
started): the bands ingest filters with must be one guard's, never an older process's band left behind in the
hash of the guard that stays (real band publishers, real Redis, ingest's real band feed and tick gate)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from common.fastredis import FastRedis
from services.guard.adapters.band_publisher import BandPublisher
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec
from services.ingest.bandfeed import BandFeed
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tests.helpers import eventually
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

D = Decimal
X = "asset-x"
MS = 1_000_000


@pytest.fixture
async def gate(redis: Any) -> AsyncIterator[TickGate]:
    """Ingest's gate following the bands in Redis through the real band feed."""
    g = TickGate(heartbeat_s=3600)
    feed = BandFeed(redis, g, lambda _assets: None, poll_s=0.05)
    task = asyncio.create_task(feed.run())
    yield g
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_older_guards_last_band_does_not_stay_in_the_bands_of_the_guard_that_remains(
        redis: Any, fast_redis: FastRedis, gate: TickGate) -> None:
    """Old guard A and new guard B overlap. B has a stop at 0.45 on X that A has not loaded yet; A writes X last
    (a take-profit both got) and stops. B keeps beating: the tick at 0.44 crosses B's stop and must go out."""
    tp = TriggerSpec("trg_tp", X, Kind.TAKE_PROFIT, trigger_price=D("0.90"))
    old, new = Engine(), Engine()
    old.upsert(tp)
    new.upsert(tp)
    new.upsert(TriggerSpec("trg_sl", X, Kind.STOP_LOSS, trigger_price=D("0.45")))
    pub_old = BandPublisher(fast_redis, lambda: old, lambda: 1, lease_s=5.0)
    pub_new = BandPublisher(fast_redis, lambda: new, lambda: 1, lease_s=5.0)
    await pub_old.step()
    await pub_new.step()  # B's first write: the whole hash, B's
    tp2 = TriggerSpec("trg_tp2", X, Kind.TAKE_PROFIT, trigger_price=D("0.80"))
    new.upsert(tp2)
    await pub_new.step()
    old.upsert(tp2)  # A reloads the same create a moment later, still without B's stop
    await pub_old.step()
    # A is gone; B's publisher runs on (its next beat is due now)
    beating = asyncio.create_task(pub_new.run())
    try:
        await eventually(lambda: pub_new.writes >= 4)
        await eventually(lambda: gate.meta is not None and gate.meta.epoch == pub_new.epoch
                         and gate.meta.seq == pub_new.seq and gate.valid_until_ns > 0)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
    now = gate.valid_until_ns - 4000 * MS
    assert gate.admit(X, mpb.TICK_KIND_PRICE_CHANGE, top("0.50"), now)  # X's first tick
    assert gate.admit(X, mpb.TICK_KIND_PRICE_CHANGE, top("0.44"), now + MS), "B's stop crossed, the tick was left out"
