"""A level change the socket never delivered, found through the simulated venue, the real book socket and Redis: the
stored book is not left showing a level that is gone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, read_book
from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory
from tests.ingest.streamutil import logged_ticks
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration
D = Decimal


async def test_a_best_bid_cancelled_without_a_change_on_the_socket_is_not_kept(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    """The venue cancels the 0.49 bid but its ``price_change`` never reaches ingest. The next change (a far bid)
    carries the venue's best bid, 0.48: the stored book must not keep offering 0.49 to a SELL copy."""
    r = aioredis.from_url(redis_url, decode_responses=True)
    market = sim.add_market(mid="0.5")
    yes = market.tokens[0]
    await r.sadd(WATCH_POSITIONS, yes)
    await r.publish(WATCH_CHANNEL, WATCH_POSITIONS)
    await run_ingest()

    def best_is(bid: str, ask: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            book = await read_book(r, yes)
            return book is not None and book.snapshot and (book.best_bid, book.best_ask) == (D(bid), D(ask))
        return check
    await eventually(best_is("0.49", "0.51"))

    del sim.books.book(yes).bids[D("0.49")]  # cancelled at the venue; the socket says nothing
    sim.books.set_level(yes, "BUY", "0.30", "3")  # the next change: best_bid "0.48"
    await eventually(best_is("0.48", "0.51"))  # resynced from REST /book
    kinds = [t.kind for t in await logged_ticks(redis_url) if t.asset_id == yes]
    assert mpb.TICK_KIND_STALE in kinds  # not served as fresh meanwhile
    assert any(u.startswith("/book?token_id=") for u in sim.clob.rest_requests)
    await r.aclose()

