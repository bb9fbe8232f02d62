"""A SELL's reservation counts only the shares it has not sold yet.

The executor commits a SELL's fill (the position falls) and releases the order's reservation afterwards (a
separate step; the sweep does it when that step fails). Routed in between, a leader's exit must not see those
shares both gone from the position and still reserved. The router's Redis read lists the in-flight SELLs it
emitted (the SELL index) and its PostgreSQL read the shares their fills booked: only the rest is held back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg.rows import dict_row

from common import hotindex, reservations
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.reservations import SHARES, USD, Reservation, WalletReserved
from common.routed import parse_routed
from common.storage import create_pool
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from services.executor.adapters.fill_store import book
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from services.router.adapters.redis_state import SELLS_PREFIX, SELLS_TTL_S, RedisState
from services.router.adapters.store import PositionAgg, RouterStore
from services.router.adapters.subscriptions import SubscriptionCache
from services.router.domain.sells import size_sell, unfilled_in_flight
from services.router.read_model import follower_state
from tests.helpers import eventually
from tests.router.conftest import COND, LEADER, YES, Stack, leader_trade, redis_markets_router, subscription
from tests.router.factories import state
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal


# --- the pure part ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reserved", "orders", "expected"),
    [
        ("0", [], D(0)),
        ("50", [], D(50)),  # no SELL known by id: the whole reservation is held back
        ("50", [("50", "0")], D(50)),  # in flight, nothing filled yet
        ("50", [("50", "50")], D(0)),  # filled and booked, release pending: nothing left to sell
        ("50", [("50", "20")], D(30)),  # partly filled
        ("80", [("50", "50")], D(30)),  # another SELL not known by id keeps its 30
        ("80", [("50", "50"), ("30", "10")], D(20)),
        ("50", [("50", "70")], D(0)),  # a fill never frees more than its order reserved
        ("80", [("50", "70"), ("30", "0")], D(30)),  # ... nor another order's shares
        ("20.000001", [("20.000001", "20")], D("0.000001")),  # the reservation rounded up to the micro-share
        ("50", [("0", "50")], D(50)),  # an order reserving nothing (sized later) frees nothing
        ("10", [("50", "50")], D(0)),  # never below zero
    ],
)
def test_unfilled_in_flight(reserved: str, orders: list[tuple[str, str]], expected: Decimal) -> None:
    got = unfilled_in_flight(D(reserved), [(D(own), D(filled)) for own, filled in orders])
    assert got == expected
    assert isinstance(got, Decimal)


@pytest.mark.parametrize(
    ("held", "reserved_micro", "sells", "expected_reserved", "expected_sell"),
    [
        # the reviewer's case: 100 held, SELL co_sell (50) filled and booked, release pending; leader closes
        ("50", 50_000_000, [("50", "50")], D(0), D(50)),
        ("50", 50_000_000, [], D(50), None),  # not known by id: NOTHING_HELD, as before (never oversold)
        ("80", 50_000_000, [("50", "20")], D(30), D(50)),  # partly filled: sell what is truly not in flight
        ("100", 50_000_000, [("50", "0")], D(50), D(50)),  # nothing filled yet: not sold twice
    ],
)
def test_follower_state_holds_back_only_unfilled_sells(held: str, reserved_micro: int, sells: list[tuple[str, str]],
                                                       expected_reserved: Decimal,
                                                       expected_sell: Decimal | None) -> None:
    res = WalletReserved(asset_shares_micro=reserved_micro)
    st = follower_state(PositionAgg(asset_size=D(held)), res, D(0), None,
                        [(D(own), D(filled)) for own, filled in sells])
    assert st.reserved_sell_size == expected_reserved
    result = size_sell(state(held_size=st.held_size, reserved_sell_size=st.reserved_sell_size), D(50), D(50), D(5))
    if expected_sell is None:
        assert not isinstance(result, Decimal)
    else:
        assert result == expected_sell
        assert result <= st.held_size - st.reserved_sell_size  # never more than held and not being sold


def test_follower_state_keeps_usd_reservations_whole() -> None:
    """BUY headroom: USD reservations are never reduced by SELL fills."""
    res = WalletReserved(total_usd_micro=25_000_000, market_usd_micro=25_000_000, asset_shares_micro=50_000_000,
                         markets=frozenset({COND}))
    st = follower_state(PositionAgg(asset_size=D(50)), res, D(0), None, [(D(50), D(50))])
    assert (st.reserved_total_usd, st.reserved_market_usd, st.reserved_sell_size) == (D(25), D(25), D(0))


# --- Redis: the SELL index ----------------------------------------------------------------------------------


@pytest.fixture
async def redis_state(redis_url: str) -> AsyncIterator[RedisState]:
    fast = FastRedis(redis_url, timeout_s=5.0)
    yield RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
    fast.close()


def _sell(coid: str, wallet: str, shares: str, lt: str = "lt_1", asset: str = YES) -> Reservation:
    return Reservation(coid, wallet, SHARES, asset, reservations.to_micro(D(shares)), lt)


async def _sells(state_: RedisState, wallets: list[str], asset: str = YES) -> dict[tuple[str, str], Any]:
    view = await state_.read_batch([], [asset], {(COND, asset): wallets})
    return view.sells


@pytest.mark.integration
async def test_emitted_sells_are_listed_until_released(r: aioredis.Redis, redis_state: RedisState) -> None:
    first = await redis_state.emit("lt_1", b"p", [_sell("co_a", "w_1", "50"), _sell("co_b", "w_2", "7.5")])
    assert first.status == "ok"
    assert (await redis_state.emit("lt_2", b"p", [_sell("co_c", "w_1", "20", "lt_2")])).status == "ok"
    index = f"{SELLS_PREFIX}w_1|{YES}"
    assert await r.smembers(index) == {"co_a", "co_c"}
    assert 0 < await r.ttl(index) <= SELLS_TTL_S
    got = await _sells(redis_state, ["w_1", "w_2", "w_3"])
    assert sorted(got[("w_1", YES)]) == [("co_a", 50_000_000), ("co_c", 20_000_000)]
    assert got[("w_2", YES)] == (("co_b", 7_500_000),)
    assert ("w_3", YES) not in got
    # a batch without a SELL of the asset does not ask (a BUY is never sized on them)
    assert (await redis_state.read_batch([], [YES], {(COND, YES): ["w_1"]}, sell_assets=set())).sells == {}
    both = await redis_state.read_batch([], [YES], {(COND, YES): ["w_1"]}, sell_assets={YES})
    assert {k: sorted(v) for k, v in both.sells.items()} == {("w_1", YES): sorted(got[("w_1", YES)])}
    assert both.reserved[("w_1", COND, YES)].asset_shares_micro == 70_000_000
    # released by the executor: no longer listed, and dropped from the index
    assert await reservations.release(r, "co_a") == 50_000_000
    got = await _sells(redis_state, ["w_1"])
    assert got[("w_1", YES)] == (("co_c", 20_000_000),)
    assert await r.smembers(index) == {"co_c"}
    await reservations.release(r, "co_c")
    assert await _sells(redis_state, ["w_1"]) == {}


@pytest.mark.integration
async def test_buys_conflicts_and_other_assets_are_not_listed(r: aioredis.Redis, redis_state: RedisState) -> None:
    buy = Reservation("co_buy", "w_1", USD, COND, 25_000_000, "lt_b")
    assert (await redis_state.emit("lt_b", b"p", [buy])).status == "ok"
    assert await r.keys(SELLS_PREFIX + "*") == []
    await reservations.reserve(r, [_sell("co_taken", "w_2", "5", "lt_x")])  # claimed before, not by the router
    done = await redis_state.emit("lt_s", b"p", [_sell("co_s1", "w_1", "10", "lt_s"),
                                                 _sell("co_taken", "w_2", "5", "lt_s")])
    assert done.status == "conflict"
    assert await r.keys(SELLS_PREFIX + "*") == []  # nothing of a conflicting trade is written
    assert (await redis_state.emit("lt_o", b"p", [_sell("co_other", "w_1", "10", "lt_o", asset="999")])).status == "ok"
    assert await _sells(redis_state, ["w_1", "w_2"]) == {}  # other asset; w_2's shares are not the router's
    assert (await _sells(redis_state, ["w_1"], asset="999"))[("w_1", "999")] == (("co_other", 10_000_000),)


@pytest.mark.integration
async def test_a_sell_sized_later_is_listed_once_sized(r: aioredis.Redis, redis_state: RedisState) -> None:
    """A fraction SELL claims its id reserving nothing; the executor sizes its claim once its turn comes."""
    assert (await redis_state.emit("lt_f", b"p", [_sell("co_f", "w_1", "0", "lt_f"),
                                                  _sell("co_g", "w_2", "5", "lt_f")])).status == "ok"
    assert ("w_1", YES) not in await _sells(redis_state, ["w_1"])
    assert await r.smembers(f"{SELLS_PREFIX}w_1|{YES}") == {"co_f"}  # kept: still in flight
    assert await reservations.size_claim(r, "co_f", 12_340_000)
    assert (await _sells(redis_state, ["w_1"]))[("w_1", YES)] == (("co_f", 12_340_000),)


# --- PostgreSQL: shares booked by the listed SELLs, in the same statement --------------------------------------


async def _book_fill(db_url: str, *, coid: str, sub: str, wallet: str, side: int, size: str, price: str,
                     fill_no: int = 1) -> None:
    """What the executor books (services.executor.adapters.fill_store.book) when the venue fills a copy order."""
    order = epb.Order(client_order_id=coid, subscription_id=sub, follower_wallet_id=wallet,
                      follower_proxy="0x" + "6a" * 20, asset_id=YES, condition_id=COND, outcome="Yes",
                      side=side, origin=epb.ORDER_ORIGIN_COPY,  # type: ignore[arg-type]
                      mode=cpb.EXECUTION_MODE_LIVE)
    if side == cpb.SIDE_BUY:
        order.amount_usd = str(D(size) * D(price))
    else:
        order.size = size
    ticket = Ticket(order=order, venue="INSIDERS", request=None, created_ns=time.time_ns())
    fill = Booking(fill_id=f"fill_{coid}_{fill_no}", size=D(size), price=D(price), notional=D(size) * D(price),
                   fee_shares=D(0), first_fill=fill_no == 1, fill_time_ms=int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        await book(conn.cursor(row_factory=dict_row), [(ticket, fill)])


@pytest.mark.integration
async def test_load_batch_reads_the_shares_booked_by_listed_sells(store: RouterStore, db_url: str) -> None:
    await _book_fill(db_url, coid="co_buy", sub="sub_1", wallet="w_1", side=cpb.SIDE_BUY, size="100", price="0.4")
    await _book_fill(db_url, coid="co_s", sub="sub_1", wallet="w_1", side=cpb.SIDE_SELL, size="20", price="0.5")
    await _book_fill(db_url, coid="co_s", sub="sub_1", wallet="w_1", side=cpb.SIDE_SELL, size="5.5", price="0.5",
                     fill_no=2)
    kw: dict[str, Any] = dict(leader_trade_ids=["lt_x"], wallets=["w_1"], markets=[COND], assets=[YES],
                              leader_assets=[], pnl_day_ms=None, funding_wallets=[])
    got = await store.load_batch(**kw, sell_orders=["co_s", "co_none", "co_buy"])
    assert got.sold == {"co_s": D("25.5")}  # partial fills summed; a BUY's fills and unfilled orders: none
    assert got.position("w_1", COND, YES).asset_size == D("74.5")
    assert (await store.load_batch(**kw)).sold == {}


# --- end to end: the router between the executor's commit and its release --------------------------------------


def _sql(db_url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql, args)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


async def _routed(stack: Stack, n: int) -> list[epb.RoutedTrade]:
    async def check() -> list[epb.RoutedTrade] | None:
        got = await stack.routed()
        return got if len(got) >= n else None

    return await eventually(check, timeout_s=15)


async def _first_half_sold(stack: Stack) -> str:
    """w_1 holds 100 YES (live), LEADER 100. The leader sells half: the router emits a SELL of 50 (reserved,
    indexed); returns its client order id. No executor runs: nothing is released unless the test does."""
    await _book_fill(stack.db_url, coid="co_buy", sub="sub_1", wallet="w_1", side=cpb.SIDE_BUY, size="100",
                     price="0.4")
    _sql(stack.db_url, "INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                       " VALUES (%s, %s, 100, 'lt_seen')", LEADER, YES)
    await stack.add(subscription("sub_1", "w_1"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_half", side=cpb.SIDE_SELL, size="50", price="0.5"))
    [first] = await _routed(stack, 1)
    assert [(o.subscription_id, o.size) for o in first.orders] == [("sub_1", "50")]
    held = await reservations.read(stack.redis, ["w_1"], COND, YES)
    assert held["w_1"].asset_shares_micro == 50_000_000
    return first.orders[0].client_order_id


async def _close(stack: Stack) -> epb.RoutedTrade:
    await eventually(lambda: _sql(stack.db_url, "SELECT size FROM leader_positions") == [(D(50),)])
    await stack.publish(leader_trade("lt_close", side=cpb.SIDE_SELL, size="50", price="0.5"))
    return (await _routed(stack, 2))[1]


@pytest.mark.integration
async def test_leader_close_is_copied_while_a_filled_sells_release_is_pending(stack: Stack) -> None:
    """The reviewer's case. The executor has committed the fill of the router's SELL of 50 (position
    100 -> 50, fills row) and releases its reservation after the commit (events appended, books watched, then
    released; a failed step waits for the sweep). The leader now closes its remaining 50: the follower must
    sell its 50 remaining shares, not skip with NOTHING_HELD (50 held, 50 "already being sold")."""
    co_sell = await _first_half_sold(stack)
    await _book_fill(stack.db_url, coid=co_sell, sub="sub_1", wallet="w_1", side=cpb.SIDE_SELL, size="50",
                     price="0.5")
    assert _sql(stack.db_url, "SELECT size FROM positions WHERE follower_wallet_id = 'w_1'") == [(D(50),)]
    routed = await _close(stack)
    skips = [(s.subscription_id, s.reason, s.detail) for s in routed.skips]
    assert [(o.subscription_id, o.size) for o in routed.orders] == [("sub_1", "50")], f"skipped: {skips}"


@pytest.mark.integration
async def test_a_partly_filled_sell_still_holds_back_its_unfilled_shares(stack: Stack) -> None:
    """The router's SELL of 50 has 20 filled (position 100 -> 80) and is still working for 30: the leader's
    close sells the 50 not already being sold, never the 30 the working SELL may still sell."""
    co_sell = await _first_half_sold(stack)
    await _book_fill(stack.db_url, coid=co_sell, sub="sub_1", wallet="w_1", side=cpb.SIDE_SELL, size="20",
                     price="0.5")
    routed = await _close(stack)
    assert [(o.subscription_id, o.size) for o in routed.orders] == [("sub_1", "50")]


@pytest.mark.integration
async def test_a_released_sell_is_not_subtracted_again(stack: Stack) -> None:
    """Filled and released (the usual case): the close sells the 50 left."""
    co_sell = await _first_half_sold(stack)
    await _book_fill(stack.db_url, coid=co_sell, sub="sub_1", wallet="w_1", side=cpb.SIDE_SELL, size="50",
                     price="0.5")
    assert await reservations.release(stack.redis, co_sell) == 50_000_000
    routed = await _close(stack)
    assert [(o.subscription_id, o.size) for o in routed.orders] == [("sub_1", "50")]


@pytest.mark.integration
async def test_an_unfilled_sell_is_not_sold_twice(stack: Stack) -> None:
    """Nothing of the SELL filled yet: the close sells only the 50 it does not already sell."""
    await _first_half_sold(stack)
    routed = await _close(stack)
    assert [(o.subscription_id, o.size) for o in routed.orders] == [("sub_1", "50")]
    held = await reservations.read(stack.redis, ["w_1"], COND, YES)
    assert held["w_1"].asset_shares_micro == 100_000_000  # 50 + 50 in flight: all of the 100 held


# --- the executor's commit and release between the router's two reads ----------------------------------------


class _CommitAndReleaseBeforeSnapshot(RouterStore):
    """The executor books the SELL's fill and releases it after the router's Redis read, before its snapshot."""

    db_url = ""
    redis: aioredis.Redis | None = None
    release = True

    async def load_batch(self, **kw: Any) -> Any:
        await _book_fill(self.db_url, coid="co_sell", sub="sub_1", wallet="w_1", side=cpb.SIDE_SELL, size="50",
                         price="0.5")
        if self.release:
            assert self.redis is not None
            assert await reservations.release(self.redis, "co_sell") == 50_000_000
        return await super().load_batch(**kw)


@pytest.mark.integration
@pytest.mark.parametrize("released", [True, False])
async def test_a_sell_filled_between_the_two_reads_is_counted_once(db_url: str, redis_url: str,
                                                                    r: aioredis.Redis, released: bool) -> None:
    now_ns = time.time_ns()
    await _book_fill(db_url, coid="co_buy", sub="sub_1", wallet="w_1", side=cpb.SIDE_BUY, size="100", price="0.4")
    _sql(db_url, "INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                 " VALUES (%s, %s, 50, 'lt_half')", LEADER, YES)
    await hotindex.upsert(r, subscription("sub_1", "w_1"))
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    sr = create_stream_redis(redis_url)
    fast = FastRedis(redis_url)
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    session = aiohttp.ClientSession()
    state_ = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
    store_ = _CommitAndReleaseBeforeSnapshot(pool)
    store_.db_url, store_.redis, store_.release = db_url, r, released
    try:
        # the router's SELL of the leader's first half (emitted: reserved and indexed), not filled yet
        setup = RedisState(fast, "tt:test:earlier", marker_ttl_s=3600, stream_maxlen=10_000)
        assert (await setup.emit("lt_half", b"p", [_sell("co_sell", "w_1", "50", "lt_half")])).status == "ok"
        cache = SubscriptionCache(r)
        await cache.reload_all()
        log_ = DurableLog(sr, ROUTED_TRADES)
        router = redis_markets_router(cache, state_, store_, log_, r, session, now_ns=now_ns)
        ev = leader_trade("lt_close", side=cpb.SIDE_SELL, size="50", price="0.5")
        ev.received_time_ns, ev.venue_time_ms = now_ns, now_ns // 1_000_000 - 1500
        await router.handle(ev)
        [(_, payload)] = await log_.read("0-0", count=10, block_ms=0)
        routed = parse_routed(payload)
        assert [(o.subscription_id, o.size) for o in routed.orders] == [("sub_1", "50")], list(routed.skips)
    finally:
        await session.close()
        await store_.close()
        await pool.close()
        fast.close()
        await sr.aclose()
