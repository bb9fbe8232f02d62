"""The router's background refresh of an old ``tt:market`` entry must not undo what ingest wrote since: a close
(``closed`` 1 without a winner: a socket ``market_resolved`` REST has not confirmed yet) and a socket
``tick_size_change``. Both write through ``common.marketrest.write_rest_market``; the router wrote a
lagging ``/markets`` answer over them with a plain HSET.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import MarketInfo, read_market, write_market
from tests.helpers import eventually
from tests.router.test_markets import COND, YES, env

pytestmark = pytest.mark.integration
__all__ = ["env"]

D = Decimal


async def test_a_refresh_with_a_lagging_rest_answer_keeps_a_closed_market_closed(env: Any) -> None:
    fake, r, cache, now = env
    # ingest closed the market (socket market_resolved, not confirmed yet): no winner, so nothing else keeps it closed
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), closed=True, accepting_orders=False,
                                     updated_ms=999_000))
    cached = await read_market(r, YES)
    assert cached is not None and cached.closed
    now["ms"] = 999_000 + 60_001  # older than the TTL: used, refreshed behind; REST still says open
    await cache.resolve(YES, COND, cached)
    await eventually(lambda: bool(fake.requests))
    await eventually(lambda: not cache._inflight)
    info = await read_market(r, YES)
    assert info is not None and info.closed and not info.accepting_orders


async def test_a_refresh_asked_before_a_tick_size_change_keeps_the_new_tick(env: Any) -> None:
    _fake, r, cache, now = env
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=999_000))
    cached = await read_market(r, YES)
    now["ms"] = 999_000 + 60_001
    task = cache._refresh(YES, COND, cached)
    # ingest's tick_size_change lands while the answer (tick 0.01) is on its way
    await r.hset(f"tt:market:{YES}", mapping={"tick_size": "0.001", "updated_ms": str(now["ms"] + 1)})
    await task
    info = await read_market(r, YES)
    assert info is not None and info.tick_size == D("0.001")
