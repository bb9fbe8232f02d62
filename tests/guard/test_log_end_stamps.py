"""Where a new guard starts reading the tick log, and the stamp it tells ingest it will never read: only ticks
ingest's gate stamped (in increasing order) say that. A MARKET_RESOLVED tick ingest's resolution recorder appends
is stamped when the resolution arrived (or, appended again by its sweep, long before): as the log's newest entry it
said gate ticks still queued, which the new guard does read, were never to be read (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.streams import PRICE_TICKS, DurableLog
from services.guard.adapters.tick_reader import log_end
from services.ingest.bandfeed import last_tick_stamp
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

GATE, RESOLVED = mpb.TICK_KIND_PRICE_CHANGE, mpb.TICK_KIND_MARKET_RESOLVED


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.from_url(redis_url)
    await client.delete(PRICE_TICKS)
    yield client
    await client.delete(PRICE_TICKS)
    await client.aclose()


async def _logged(raw: Any, *ticks: tuple[int, int]) -> str:
    cursor = ""
    for kind, stamp in ticks:
        tick = mpb.PriceTick(asset_id="a", kind=kind, received_time_ns=stamp)
        cursor = (await raw.xadd(PRICE_TICKS, {b"p": tick.SerializeToString()})).decode()
    return cursor


@pytest.mark.parametrize(("ticks", "stamp"), [
    (((GATE, 150), (RESOLVED, 200)), 150),  # the gate's 180 is still queued: the new guard reads it
    (((GATE, 150), (RESOLVED, 120)), 150),  # appended again by the recorder's sweep
    (((GATE, 150), (GATE, 160)), 160),
    (((RESOLVED, 200),), 0),  # no gate tick to go by: nothing is said (the empty log's 1 then)
])
async def test_a_new_guard_says_it_never_reads_only_gate_ticks_before_its_cursor(
        raw: Any, ticks: tuple[tuple[int, int], ...], stamp: int) -> None:
    newest = await _logged(raw, *ticks)
    assert await log_end(DurableLog(raw, PRICE_TICKS)) == (newest, stamp)


@pytest.mark.parametrize(("ticks", "floor"), [
    (((GATE, 300), (RESOLVED, 100)), 300),  # the sweep appended an old resolution after the last gate tick
    (((GATE, 300), (RESOLVED, 400)), 400),
    (((GATE, 300),), 300),
    ((), 0),
    (((GATE, 300), *[(RESOLVED, 100)] * 300), 300),  # a sweep appended hundreds of old resolutions since
])
async def test_a_new_ingest_stamps_and_trusts_after_every_tick_the_log_ends_with(
        raw: Any, ticks: tuple[tuple[int, int], ...], floor: int) -> None:
    """Its ticks are stamped above the floor, and bands trusted only once guard read past it."""
    await _logged(raw, *ticks)
    assert await last_tick_stamp(raw) == floor
