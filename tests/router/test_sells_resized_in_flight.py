"""A copied SELL is never sized on shares a copy the executor sent again re-sized may still sell.

A copy SELL the venue refused for lack of shares is sent again by the executor's reconciliation, sized to the
venue's count, under a new client order id (``resizing.resized_order``: ``co_rs_…``, origin COPY and the
original's subscription kept). The refused order's claim was released when it was REJECTED, and the re-sized one
never went through the router's emit: it claims nothing in Redis. So the router's batch read counts it from the
executor's open orders, as it counts exits: every COPY SELL whose client order id is not of the router's form
(``store_sql.ROUTER_COPY_ID``; the router's own copies all claimed their id in Redis when emitted, and are counted
there only, listed in the SELL index or not). As the executor sizes a copy (``order_sql.SELLABLE_PART``), a re-sized
copy is its subscription's: set aside from that subscription's part of a split position up to the part, not held
back from every part.

The running router (real PostgreSQL, Redis and gRPC): w_1 follows LEADER (sub_A) and LEADER_B (sub_B); the executor
booked sub_A's 100 shares, and sub_B's 50 when the position is split. LEADER holds 100, LEADER_B 50.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from common.reservations import WalletReserved, to_micro
from services.executor.reconciling import RESIZED_PREFIX, resized_id
from services.router.adapters.store import PositionAgg, RouterStore
from services.router.adapters.store_sql import ROUTER_COPY_ID
from services.router.domain import holdings
from services.router.domain.decide import client_order_id, client_order_ids
from services.router.read_model import follower_state
from tests.router.conftest import LEADER, YES, Stack, subscription
from tests.router.test_sell_parts_leftovers import _sold
from tests.router.test_sell_parts_routed import LEADER_B, _decided, _route, _sql, _start
from tests.router.test_sells_exits_in_flight import _selling
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
ONLY_A = (subscription("sub_A", "w_1"),)
REFUSED = client_order_id("lt_earlier", "w_1", YES)  # the copy the venue refused
RESIZED = resized_id(REFUSED)


def _resized(db_url: str, size: str, **kw: Any) -> None:
    """The executor's rows of the re-sized copy SELL of ``REFUSED`` (sub_A's unless told), at the venue."""
    _selling(db_url, kw.pop("coid", RESIZED), size, **{"origin": "COPY", **kw})


# --- the running router: a position sized on the wallet's shares (no split) -----------------------------------------

# (orders of w_1 besides sub_A's BUY of 100: size, _resized's keywords) -> sub_A's copy of LEADER's SELL of 50 of its
# 100 (half), or the skip's reason
UNSPLIT = [
    pytest.param([("60", {})], "20", id="a re-sized copy of 60 at the venue: half of the 40 it leaves"),
    pytest.param([("60", {"state": "SUBMITTING"})], "20", id="a re-sized copy being posted"),
    pytest.param([("60", {"sub": "sub_B"})], "20", id="another subscription's: no split kept, the wallet's shares"),
    pytest.param([("60", {"sub": None})], "20", id="a re-sized copy of no subscription"),
    pytest.param([("30", {}), ("30", {"origin": "TRIGGER", "coid": "ex_1"})], "20",
                 id="a re-sized copy and an exit add up"),
    pytest.param([("60", {"coid": "copy_by_hand"})], "20", id="a copy given to SubmitOrder: claims nothing either"),
    pytest.param([("60", {"state": "NEW"})], "50", id="not sent yet (NEW): counts nothing, as for the executor"),
    pytest.param([("60", {"state": "FILLED"})], "50", id="a terminal re-sized copy counts nothing"),
    pytest.param([("60", {"ended": True})], "50", id="its end recorded: counts nothing"),
    pytest.param([("60", {"coid": client_order_id("lt_x", "w_1", YES)})], "50",
                 id="a copy of the router's id form: counted from Redis only (none claimed here)"),
    pytest.param([("100", {})], "NOTHING_HELD", id="a re-sized copy of all of it: nothing left to sell"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("orders", "expected"), UNSPLIT)
async def test_a_copy_is_sized_on_what_the_resized_copies_in_flight_leave(
        stack: Stack, orders: list[tuple[str, dict[str, Any]]], expected: str) -> None:
    await _start(stack, b_bought=False, subs=ONLY_A)
    for size, kw in orders:
        _resized(stack.db_url, size, **kw)
    routed = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(routed) == [("sub_A", expected)]


@pytest.mark.integration
async def test_a_partly_filled_resized_copy_counts_only_what_it_may_still_sell(stack: Stack) -> None:
    """The re-sized SELL of 60 filled 30: the position fell to 70 with the fill; its 30 still to sell are held back,
    the 30 sold not twice."""
    await _start(stack, b_bought=False, subs=ONLY_A)
    _resized(stack.db_url, "60", state="PARTIALLY_FILLED", filled="30")
    await _sold(stack.db_url, RESIZED, "sub_A", epb.ORDER_ORIGIN_COPY, "30")
    assert _sql(stack.db_url, "SELECT size FROM positions") == [(D(70),)]
    routed = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(routed) == [("sub_A", "20")]  # half of 70 - 30 (35 before: the re-sized copy was not seen)


@pytest.mark.integration
async def test_nothing_left_the_skip_names_what_the_resized_copy_is_selling(stack: Stack) -> None:
    await _start(stack, b_bought=False, subs=ONLY_A)
    _resized(stack.db_url, "100")
    routed = await _route(stack, "lt_a_half", LEADER, "50")
    assert routed.skips[0].detail == "follower holds 100 shares (100 already being sold)"


# --- the running router: a position several subscriptions bought (a split kept) ------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize(("resized", "closing", "expected"), [
    # sub_B's own re-sized copy of 30 may sell 30 of its 50: its leader's close sells the 20 it leaves (50 before)
    pytest.param([("sub_B", "30")], LEADER_B, ("sub_B", "20"), id="sub_B's close: the 20 its re-sized copy leaves"),
    pytest.param([("sub_B", "50")], LEADER_B, ("sub_B", "NOTHING_HELD"), id="sub_B's close: all being sold"),
    # sub_B's re-sized copy takes sub_B's shares, as the executor counts a copy: sub_A's close sells all of its 100
    # (held back from every part, like an exit, it sold 70)
    pytest.param([("sub_B", "30")], LEADER, ("sub_A", "100"), id="sub_A's close: sub_B's copy takes sub_B's part"),
    # beyond sub_B's part (60 of its 50) the 10 more may come off sub_A's part: 90 (100 before)
    pytest.param([("sub_B", "60")], LEADER, ("sub_A", "90"), id="sub_A's close: sub_B's copy beyond its part"),
    pytest.param([("sub_A", "30")], LEADER, ("sub_A", "70"), id="sub_A's close: its own re-sized copy"),
    pytest.param([("sub_A", "30"), ("sub_B", "20")], LEADER, ("sub_A", "70"), id="sub_A's close: both"),
    pytest.param([(None, "30")], LEADER, ("sub_A", "70"), id="a copy of no subscription: off every part"),
])
async def test_a_resized_copy_in_flight_counts_against_its_own_subscriptions_part(
        stack: Stack, resized: list[tuple[str | None, str]], closing: str, expected: tuple[str, str]) -> None:
    await _start(stack)
    for i, (sub, size) in enumerate(resized):
        _resized(stack.db_url, size, sub=sub, coid=resized_id(f"co_refused_{i}"))
    routed = await _route(stack, "lt_close", closing, "100" if closing == LEADER else "50")
    assert _decided(routed) == [expected]


# --- PostgreSQL: the batch read -----------------------------------------------------------------------------------

@pytest.mark.integration
async def test_load_batch_reads_the_copies_the_router_did_not_send(store: RouterStore, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, cost_usd) VALUES"
                     " ('w_1', '111', '0xa', 100, 40), ('w_1', '222', '0xa', 100, 40)")
    _resized(db_url, "60", asset="111", filled="15", state="PARTIALLY_FILLED")
    _resized(db_url, "7.5", asset="111", sub="sub_B", coid=resized_id("co_b"))
    _resized(db_url, "5", asset="111", sub=None, coid=resized_id("co_none"))  # no subscription: with the exits
    _resized(db_url, "5", asset="111", sub="", coid=resized_id("co_blank"))
    _resized(db_url, "9", asset="111", sub="sub_B", coid=resized_id("co_new"), state="NEW")
    _resized(db_url, "9", asset="111", sub="sub_B", coid=resized_id("co_filled"), state="FILLED", filled="9")
    _selling(db_url, "ex_1", "10", asset="111")
    _resized(db_url, "20", asset="111", coid=client_order_id("lt_1", "w_1", "111"))  # the router's: Redis counts it
    _resized(db_url, "20", asset="111", coid=client_order_ids("lt_2", "111")("w_1"))
    _resized(db_url, "30", asset="222", coid=resized_id("co_other"))  # not a SELL's asset of the batch
    kw: dict[str, Any] = dict(leader_trade_ids=["lt_x"], wallets=["w_1"], markets=["0xc"], assets=["111", "222"],
                              leader_assets=[], pnl_day_ms=None, funding_wallets=[])
    got = await store.load_batch(**kw, sell_assets=["111"])
    assert got.unrouted == {("w_1", "111"): {"sub_A": D(45), "sub_B": D("7.5")}}
    assert got.exiting == {("w_1", "111"): D(20)}
    pos = got.position("w_1", "0xc", "111")
    assert (pos.asset_unrouted, pos.asset_exiting) == ({"sub_A": D(45), "sub_B": D("7.5")}, D(20))
    assert got.position("w_1", "0xc", "222").asset_unrouted is None
    assert (await store.load_batch(**kw, sell_assets=[])).unrouted == {}  # a batch of BUYs looks up none


def test_the_routers_copies_are_known_by_their_id_and_the_resized_ones_are_not() -> None:
    """LOAD tells the router's copies (counted from Redis) from the executor's re-sized ones by the id's form."""
    form = re.compile(ROUTER_COPY_ID)
    for i in range(200):
        lt, wallet = f"lt_{i}", f"w_{i % 7}"
        mine = client_order_id(lt, wallet, YES)
        assert form.match(mine) and client_order_ids(lt, YES)(wallet) == mine
        again = resized_id(mine)
        assert again.startswith(RESIZED_PREFIX) and not form.match(again)


# --- pure: the follower's state ---------------------------------------------------------------------------------

SPLIT = {"sub_A": D(100), "sub_B": D(50)}


@pytest.mark.parametrize(("parts", "router_copy", "exiting", "unrouted", "reserved", "by_sub", "sellable_a"), [
    (None, None, "0", {"sub_A": D(60)}, D(60), None, D(40)),  # no split: off the wallet's shares
    (None, None, "10", {"sub_B": D(30)}, D(40), None, D(60)),
    (SPLIT, None, "0", {"sub_B": D(30)}, D(30), {"sub_B": D(30)}, D(100)),  # sub_B's own part
    (SPLIT, None, "0", {"sub_A": D(30)}, D(30), {"sub_A": D(30)}, D(70)),
    (SPLIT, "10", "10", {"sub_B": D(30), "sub_A": D(5)}, D(55), {"sub_B": D(40), "sub_A": D(5)}, D(85)),
    (SPLIT, None, "0", {}, D(0), None, D(100)),
])
def test_follower_state_counts_the_copies_the_router_did_not_send(
        parts: dict[str, Decimal] | None, router_copy: str | None, exiting: str, unrouted: dict[str, Decimal],
        reserved: Decimal, by_sub: dict[str, Decimal] | None, sellable_a: Decimal) -> None:
    """``router_copy``: sub_B's copy sent by the router, reserving its shares in Redis."""
    res = WalletReserved(asset_shares_micro=to_micro(D(router_copy)) if router_copy else 0)
    pos = PositionAgg(asset_size=D(150) if parts else D(100), asset_parts=parts, asset_exiting=D(exiting),
                      asset_unrouted=unrouted or None)
    st = follower_state(pos, res, D(0), None, [(D(router_copy), D(0))] if router_copy else (),
                        {"sub_B": D(router_copy)} if router_copy else None)
    assert (st.reserved_sell_size, st.selling_by) == (reserved, by_sub)
    own = holdings.part_of(st, "sub_A")
    assert holdings.sellable(st, own, "sub_A") == sellable_a
