"""Market info that would leave a market uncopyable after a transient or wrong signal (router, real Redis, a real
HTTP stand-in for CLOB REST):

- ``accepting_orders: false`` (not closed) in a CLOB REST answer is a pause, not an end: a new market answering so
  for its first seconds, or a market paused for a while. Routing with it skips every copy MARKET_CLOSED; the router
  kept it for its whole TTL (300 s) since nothing else writes that flag, so a market's opening minutes went
  uncopied. A not-accepting entry is read again before routing once it is a few seconds old.
- a ``/markets`` answer that does not list the asset (a trade carrying another market's condition id: the other
  market of its neg-risk event) must not lend the asset that market's state: its ``closed`` would stay for ever
  (a closed entry is never reopened) and its condition id would count the exposure in the wrong market.
- a leader price outside the cached [tick, 1 - tick] (0.995 on a cached 0.01) shows the venue made the tick finer
  near 0 or 1 since: the tick is read again before routing instead of skipping PRICE_OUTSIDE_TICK_BOUNDS until
  the TTL (the router passes the price: ``resolve(..., price=)``).
- a failed fetch is not remembered: the next trade asks again.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import read_market
from tests.router.test_markets import BOOK, COND, MARKET, YES, env

pytestmark = pytest.mark.integration
__all__ = ["env"]

D = Decimal
OTHER_COND = "0x" + "cd" * 32  # the other market of the same neg-risk event, resolved
OTHER_YES, OTHER_NO = "7" * 70, "8" * 70


def _other_market() -> dict[str, Any]:
    other = copy.deepcopy(MARKET)
    other.update(condition_id=OTHER_COND, closed=True, accepting_orders=False, market_slug="other-outcome",
                 neg_risk=True, tokens=[{"token_id": OTHER_YES, "outcome": "Yes", "price": 1, "winner": True},
                                        {"token_id": OTHER_NO, "outcome": "No", "price": 0, "winner": False}])
    return other


async def test_a_market_not_accepting_orders_yet_is_read_again_before_routing(env: Any) -> None:
    fake, r, cache, now = env
    fake.markets[COND]["accepting_orders"] = False  # REST's first answer: the market has not opened yet
    first = await cache.resolve(YES, COND, None)
    assert first is not None and not first.accepting_orders and not first.closed
    fake.markets[COND]["accepting_orders"] = True  # it opened: leaders trade there
    now["ms"] += 10_000  # ten seconds later (the TTL is a minute)
    second = await cache.resolve(YES, COND, await read_market(r, YES))
    assert second is not None and second.accepting_orders, "copies skipped MARKET_CLOSED on a stale pause"
    stored = await read_market(r, YES)
    assert stored is not None and stored.accepting_orders


async def test_a_not_accepting_market_is_asked_at_most_once_per_recheck(env: Any) -> None:
    fake, r, cache, now = env
    fake.markets[COND]["accepting_orders"] = False
    assert await cache.resolve(YES, COND, None) is not None
    asked = len(fake.requests)
    for _ in range(5):  # trades in the same second: the entry is fresh, routed as it says (skipped)
        info = await cache.resolve(YES, COND, await read_market(r, YES))
        assert info is not None and not info.accepting_orders
    assert len(fake.requests) == asked
    now["ms"] += 10_000
    fake.fail = True  # CLOB REST down at the re-read: the cached entry still says what is known (skipped, not lost)
    info = await cache.resolve(YES, COND, await read_market(r, YES))
    assert info is not None and not info.accepting_orders and info.tick_size == D("0.01")
    asked = len(fake.requests)
    assert await cache.resolve(YES, COND, await read_market(r, YES)) is not None
    assert len(fake.requests) == asked  # a failed re-read is not repeated by every trade


async def test_a_closed_market_is_not_read_again(env: Any) -> None:
    fake, r, cache, now = env
    fake.markets[COND].update(closed=True, accepting_orders=False)
    assert await cache.resolve(YES, COND, None) is not None
    asked = len(fake.requests)
    now["ms"] += 10_000
    info = await cache.resolve(YES, COND, await read_market(r, YES))
    assert info is not None and info.closed and len(fake.requests) == asked


async def test_a_market_answer_without_the_asset_does_not_close_it(env: Any) -> None:
    fake, r, cache, _now = env
    fake.add_market(_other_market())
    info = await cache.resolve(YES, OTHER_COND, None)  # the trade named the other market
    assert info is not None
    assert (info.closed, info.accepting_orders, info.condition_id) == (False, True, COND), \
        "the asset took the other market's state"
    stored = await read_market(r, YES)
    assert stored is not None and not stored.closed and stored.condition_id == COND


async def test_a_market_answer_without_the_asset_and_no_book_gives_nothing(env: Any) -> None:
    fake, r, cache, _now = env
    fake.add_market(_other_market())
    del fake.books[BOOK["asset_id"]]
    assert await cache.resolve(YES, OTHER_COND, None) is None
    assert await read_market(r, YES) is None


async def test_a_failed_fetch_is_not_remembered(env: Any) -> None:
    fake, r, cache, _now = env
    fake.fail = True
    assert await cache.resolve(YES, COND, None) is None
    fake.fail = False  # CLOB REST is back: the very next trade gets the rules
    info = await cache.resolve(YES, COND, await read_market(r, YES))
    assert info is not None and info.tick_size == D("0.01")


async def test_a_leader_price_past_the_cached_tick_bounds_reads_the_tick_again(env: Any) -> None:
    """The router cached tick 0.01; the market went past 0.96 and the venue made its tick 0.001 (the asset is not
    watched by ingest, so no ``tick_size_change`` reached the cache). A leader BUY at 0.995 is outside [0.01, 0.99]:
    routed with the cached tick it is skipped PRICE_OUTSIDE_TICK_BOUNDS until the TTL."""
    fake, r, cache, now = env
    assert await cache.resolve(YES, COND, None) is not None
    fake.markets[COND]["minimum_tick_size"] = 0.001
    fake.books[YES]["tick_size"] = "0.001"
    now["ms"] += 10_000
    cached = await read_market(r, YES)
    asked = len(fake.requests)
    same = await cache.resolve(YES, COND, cached, price=D("0.709999959"))  # averaged, inside the bounds: no sign
    assert same == cached and len(fake.requests) == asked
    info = await cache.resolve(YES, COND, cached, price=D("0.995"))
    assert info is not None and info.tick_size == D("0.001")
    stored = await read_market(r, YES)
    assert stored is not None and stored.tick_size == D("0.001")


async def test_a_leader_price_past_the_bounds_of_a_current_tick_asks_once_per_recheck(env: Any) -> None:
    fake, r, cache, now = env
    assert await cache.resolve(YES, COND, None) is not None
    now["ms"] += 10_000
    asked = len(fake.requests)
    for _ in range(3):  # REST still says 0.01 (a leader price of 0.995 is then a bad report): asked once
        info = await cache.resolve(YES, COND, await read_market(r, YES), price=D("0.995"))
        assert info is not None and info.tick_size == D("0.01")
    assert len(fake.requests) == asked + 2  # /markets and /book, once
