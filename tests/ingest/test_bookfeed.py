"""The CLOB book feed through the simulated venue: watch sets, dynamic subscriptions, Redis books, ticks."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, WATCH_TRIGGERS, read_book, read_market
from sim.polymarket import PolymarketSim
from tests.helpers import alerts_raised, eventually, internal_channel
from tests.ingest.conftest import IngestFactory, follow
from tests.ingest.streamutil import logged_ticks
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration
D = Decimal
LEADER = "0x" + "ab" * 20


async def watch(r: aioredis.Redis, key: str, *assets: str, remove: bool = False) -> None:
    if remove:
        await r.srem(key, *assets)
    else:
        await r.sadd(key, *assets)
    await r.publish(WATCH_CHANNEL, key)


async def test_books_ticks_and_dynamic_subscriptions(sim: PolymarketSim, run_ingest: IngestFactory,
                                                    redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    market = sim.add_market(mid="0.5", min_order_size=Decimal("5"))
    yes, no = market.tokens
    await watch(r, WATCH_POSITIONS, yes)
    app = await run_ingest()

    async def book_best_is(want: tuple[Decimal, Decimal]) -> bool:
        book = await read_book(r, yes)
        return book is not None and (book.best_bid, book.best_ask) == want
    await eventually(lambda: book_best_is((D("0.49"), D("0.51"))))
    book = await read_book(r, yes)
    assert book is not None and book.bids[0][0] > book.bids[1][0] and book.asks[0][0] < book.asks[1][0]
    info = await eventually(lambda: read_market(r, yes))
    assert (info.min_order_size, info.tick_size, info.condition_id) == (D(5), D("0.01"), market.condition_id)

    sim.books.consume(yes, "BUY", 100)  # takes the whole 0.51 level
    await eventually(lambda: book_best_is((D("0.49"), D("0.52"))))
    sim.books.tick_size_change(yes, "0.001")

    async def tick_is_new() -> bool:
        m = await read_market(r, yes)
        return m is not None and m.tick_size == D("0.001")
    await eventually(tick_is_new)

    ticks = await logged_ticks(redis_url)
    kinds = [t.kind for t in ticks]
    assert kinds[0] == mpb.TICK_KIND_BOOK and mpb.TICK_KIND_PRICE_CHANGE in kinds
    assert mpb.TICK_KIND_TICK_SIZE_CHANGE in kinds and mpb.TICK_KIND_LAST_TRADE_PRICE in kinds
    assert {t.asset_id for t in ticks} == {yes}

    # a trigger on the other token: subscribed on the open socket, no reconnect
    await watch(r, WATCH_TRIGGERS, no)
    await eventually(lambda: no in app.clob.subscribed)

    async def no_book() -> bool:
        return await read_book(r, no) is not None
    await eventually(no_book)
    await watch(r, WATCH_POSITIONS, yes, remove=True)
    await eventually(lambda: app.clob.subscribed == {no})
    assert app.clob.connections == 1 and sim.clob.connections == 1
    assert '"operation":"unsubscribe"' in sim.clob.received[-1]
    await r.aclose()


async def test_recent_leader_trade_assets_are_watched(sim: PolymarketSim, run_ingest: IngestFactory,
                                                     redis_url: str) -> None:
    await follow(redis_url, LEADER)
    market = sim.add_market()
    app = await run_ingest()
    await sim.rtds.wait_subscribed()
    sim.trade(LEADER, market=market, token=market.tokens[1])
    await eventually(lambda: market.tokens[1] in app.clob.subscribed)
    r = aioredis.from_url(redis_url, decode_responses=True)
    assert await r.zscore("tt:ingest:recent_assets", market.tokens[1]) is not None
    await r.aclose()


async def test_stale_book_ticks_once_then_resyncs_from_rest(sim: PolymarketSim, run_ingest: IngestFactory,
                                                           redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    market = sim.add_market()
    await watch(r, WATCH_POSITIONS, market.tokens[0])
    app = await run_ingest(book_stale_s=0.4)

    async def stale_ticks() -> list[mpb.PriceTick]:
        return [t for t in await logged_ticks(redis_url) if t.kind == mpb.TICK_KIND_STALE]
    [stale] = await eventually(stale_ticks)
    assert stale.stale and stale.asset_id == market.tokens[0]
    await eventually(lambda: any(u.startswith("/book?token_id=") for u in sim.clob.rest_requests))

    async def fresh_after_stale() -> bool:
        ticks = await logged_ticks(redis_url)
        idx = next(i for i, t in enumerate(ticks) if t.kind == mpb.TICK_KIND_STALE)
        return any(t.kind == mpb.TICK_KIND_BOOK and not t.stale for t in ticks[idx + 1:])
    await eventually(fresh_after_stale)
    assert app.metrics.count("ticks", "TICK_KIND_STALE") >= 1
    await r.aclose()


async def test_market_resolved_and_reconnect_resubscribes(sim: PolymarketSim, run_ingest: IngestFactory,
                                                         redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    market = sim.add_market()
    await watch(r, WATCH_POSITIONS, *market.tokens)
    app = await run_ingest()
    await eventually(lambda: sim.clob.clients and all(set(market.tokens) <= c.subs for c in sim.clob.clients))
    await sim.clob.disconnect_all()
    await eventually(lambda: app.clob.connections == 2 and sim.clob.clients
                     and all(set(market.tokens) <= c.subs for c in sim.clob.clients))
    sim.books.resolve(market.condition_id, list(market.tokens), market.tokens[0])

    async def resolved() -> list[mpb.PriceTick]:
        return [t for t in await logged_ticks(redis_url) if t.kind == mpb.TICK_KIND_MARKET_RESOLVED]
    ticks = await eventually(resolved)
    assert {t.winning_asset_id for t in ticks} == {market.tokens[0]}
    assert app.metrics.count("reconnects", "clob") >= 1
    await r.aclose()


async def test_price_tick_stream_filters_by_asset(sim: PolymarketSim, run_ingest: IngestFactory,
                                                 redis_url: str) -> None:

    from tradingtools.market.v1 import market_pb2_grpc as mgrpc

    r = aioredis.from_url(redis_url, decode_responses=True)
    m1, m2 = sim.add_market(), sim.add_market()
    await watch(r, WATCH_POSITIONS, m1.tokens[0], m2.tokens[0])
    app = await run_ingest()
    async with internal_channel(app.grpc.port) as channel:
        stub = mgrpc.IngestServiceStub(channel)
        call = stub.StreamPriceTicks(mpb.StreamPriceTicksRequest(after_cursor="0", asset_ids=[m2.tokens[0]]))
        first = await asyncio.wait_for(call.read(), 10)
        assert first.tick.asset_id == m2.tokens[0] and first.tick.kind == mpb.TICK_KIND_BOOK
        assert first.tick.best_bid == "0.49" and first.tick.best_ask == "0.51" and first.tick.mid == "0.5"
        sim.books.consume(m1.tokens[0], "SELL", 500)
        sim.books.consume(m2.tokens[0], "SELL", 100)
        second = await asyncio.wait_for(call.read(), 10)
        assert second.tick.asset_id == m2.tokens[0] and second.tick.best_bid == "0.48"
        call.cancel()
    await r.aclose()


async def test_silent_book_socket_is_reconnected(sim: PolymarketSim, run_ingest: IngestFactory,
                                                redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    market = sim.add_market()
    await watch(r, WATCH_POSITIONS, market.tokens[0])
    app = await run_ingest(clob_ping_interval_s=0.1, clob_stall_s=0.5)
    await eventually(lambda: app.clob.connections == 1 and len(sim.clob.clients) == 1)
    await eventually(lambda: sim.clob.pings >= 2)  # PING every interval, answered with PONG
    sim.clob.stall()  # no PONG, no data
    await eventually(lambda: app.metrics.count("stalls", "clob") >= 1, timeout_s=5)
    stalled = await eventually(lambda: [a for a in alerts_raised(redis_url, "FEED_STALLED")
                                        if a.key == "feed_stalled:clob"], message="the FEED_STALLED alert")
    assert stalled[0].service == "ingest" and stalled[0].fields["feed"] == "clob"
    sim.clob.resume()
    await eventually(lambda: app.clob.connections >= 2 and any(market.tokens[0] in c.subs
                                                               for c in sim.clob.clients))
    await r.aclose()
