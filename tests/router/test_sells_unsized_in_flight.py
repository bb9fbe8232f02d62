"""A copied SELL routed while an earlier copy SELL of the wallet's asset is not sized yet goes out as a fraction too.

A SELL routed while the wallet's copy BUY was in flight goes out as the leader's fraction (``sell_fraction``): its
claim reserves no shares until the executor sizes it in its turn (``admission.size_later`` ->
``reservations.size_claim``). Its BUY is released before that, so a leader SELL routed in between saw no BUY in
flight and no shares reserved, and was sized on every share held: both copies sold the same shares. The router's Redis
read now reports the indexed SELL claims still reserving nothing, for every wallet of a SELL's asset (whatever it
reserves), and such a SELL goes out as a fraction: the executor sizes it once the earlier one has ended, on what it
left (``tests/executor/test_sell_after_buy*.py``: fractions sized in arrival order, across a restart too).

The running router (real PostgreSQL, Redis and gRPC): w_1 follows LEADER (sub_A) and LEADER_B (sub_B); the executor
booked sub_A's 100 shares, and sub_B's 50 when the position is split. LEADER holds 100, LEADER_B 50.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.fastredis import FastRedis
from common.reservations import SHARES, Reservation, WalletReserved
from common.streams import ROUTED_TRADES
from services.router.adapters.redis_state import SELLS_PREFIX, RedisState
from services.router.adapters.store import PositionAgg
from services.router.domain.model import Reason
from services.router.domain.sells import AfterBuy, size_sell
from services.router.read_model import follower_state
from tests.router.conftest import COND, LEADER, YES, Stack, subscription
from tests.router.factories import state
from tests.router.test_sell_parts_routed import LEADER_B, _decided, _route, _start

D = Decimal
ONLY_A = (subscription("sub_A", "w_1"),)


# --- pure ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("held", "in_flight", "unsized", "parts", "sold", "before", "expected"), [
    # the reviewer's case: 62.5 held (the BUY booked and released), the first SELL (1/3) not sized yet
    pytest.param("62.5", "0", 1, None, "100", "200", AfterBuy(D("0.5")), id="one not sized yet: a fraction"),
    pytest.param("62.5", "0", 0, None, "100", "200", D("31.25"), id="none waiting: sized now"),
    pytest.param("100", "20", 2, None, "25", "100", AfterBuy(D("0.25")), id="sized SELLs in flight too"),
    pytest.param("100", "0", 1, None, "100", "100", AfterBuy(D(1)), id="the leader closes: all the others leave"),
    pytest.param("0", "0", 1, None, "50", "100", AfterBuy(D("0.5")), id="nothing held yet: the executor looks"),
    pytest.param("150", "0", 1, {"sub_A": D(100), "sub_B": D(50)}, "50", "100", AfterBuy(D("0.5")),
                 id="a split kept: the executor sizes it on its part"),
    pytest.param("100", "0", 1, None, "50", None, (Reason.LEADER_POSITION_UNKNOWN,), id="never seen buying"),
    pytest.param("0", "0", 1, None, "50", None, (Reason.NOTHING_HELD,), id="never seen buying, nothing held"),
])
def test_a_sell_while_an_earlier_sell_is_not_sized_yet(held: str, in_flight: str, unsized: int,
                                                       parts: dict[str, Decimal] | None, sold: str,
                                                       before: str | None, expected: object) -> None:
    st = state(held_size=D(held), reserved_sell_size=D(in_flight), unsized_sells=unsized, held_parts=parts)
    result = size_sell(st, D(sold), D(before) if before is not None else None, D(5), "sub_A")
    if isinstance(expected, tuple):
        assert isinstance(result, tuple) and result[0] is expected[0]
    else:
        assert result == expected


def test_follower_state_keeps_the_sells_not_sized_yet() -> None:
    st = follower_state(PositionAgg(asset_size=D("62.5")), WalletReserved(), D(0), None, (), None, 2)
    assert (st.unsized_sells, st.reserved_sell_size) == (2, D(0))
    assert follower_state(PositionAgg(), WalletReserved(), D(0), None).unsized_sells == 0


# --- Redis: the read --------------------------------------------------------------------------------------------

@pytest.fixture
async def redis_state(redis_url: str) -> AsyncIterator[RedisState]:
    fast = FastRedis(redis_url, timeout_s=5.0)
    yield RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
    fast.close()


def _sell(coid: str, wallet: str, shares: str, asset: str = YES) -> Reservation:
    return Reservation(coid, wallet, SHARES, asset, reservations.to_micro(D(shares)), "lt_s")


@pytest.mark.integration
async def test_the_read_reports_the_sells_not_sized_yet(r: aioredis.Redis, redis_state: RedisState) -> None:
    """w_1's fraction SELL claims its id reserving nothing: reported by id though w_1 reserves no shares at all, until
    the executor sizes it (then listed with its shares) or releases it."""
    assert (await redis_state.emit("lt_s", b"p", [_sell("co_f", "w_1", "0"), _sell("co_g", "w_2", "5")],
                                   "sub_A\nsub_A")).status == "ok"
    assert (await redis_state.emit("lt_o", b"p", [_sell("co_o", "w_3", "0", asset="999")], "sub_A")).status == "ok"
    queries = {(COND, YES): ["w_1", "w_2", "w_3"]}
    view = await redis_state.read_batch([], [YES], queries)
    assert view.reserved[("w_1", COND, YES)].asset_shares_micro == 0
    assert view.unsized == {("w_1", YES): ("co_f",)}  # not w_3's, of another asset
    assert view.sells == {("w_2", YES): (("co_g", 5_000_000),)} and view.sell_order_ids() == ["co_g"]
    # a batch without a SELL of the asset does not ask
    assert (await redis_state.read_batch([], [YES], queries, sell_assets=set())).unsized == {}
    # a bare member and a coid|sub one of the same claim: one SELL
    await r.sadd(f"{SELLS_PREFIX}w_1|{YES}", "co_f")
    assert (await redis_state.read_batch([], [YES], queries)).unsized == {("w_1", YES): ("co_f",)}
    # sized by the executor: listed with its shares
    assert await reservations.size_claim(r, "co_f", 20_830_000)
    view = await redis_state.read_batch([], [YES], queries)
    assert view.unsized == {} and view.sells[("w_1", YES)] == (("co_f", 20_830_000),)
    # ended (released): gone, and dropped from the index
    await reservations.release(r, "co_f")
    view = await redis_state.read_batch([], [YES], queries)
    assert view.unsized == {} and ("w_1", YES) not in view.sells
    assert await r.smembers(f"{SELLS_PREFIX}w_1|{YES}") == set()


# --- the running router -------------------------------------------------------------------------------------------

async def _unsized(stack: Stack, coid: str, sub: str, wallet: str = "w_1", asset: str = YES) -> None:
    """What the router's emit leaves of a SELL sent with a fraction: its claim reserving 0 shares, indexed."""
    assert await reservations.reserve(stack.redis, [Reservation(coid, wallet, SHARES, asset, 0, "lt_earlier")]) == [
        True]
    await stack.redis.sadd(f"{SELLS_PREFIX}{wallet}|{asset}", f"{coid}|{sub}")


@pytest.mark.integration
@pytest.mark.parametrize(("split", "waiting", "closing", "expected"), [
    pytest.param(False, ("co_f", "sub_A", "w_1", YES), LEADER, "0.5", id="its own earlier SELL not sized yet"),
    pytest.param(True, ("co_f", "sub_B", "w_1", YES), LEADER, "0.5", id="another subscription's, on a split"),
    pytest.param(True, ("co_f", "sub_A", "w_1", YES), LEADER_B, "1", id="the other leader closes"),
    pytest.param(False, ("co_f", "sub_A", "w_2", YES), LEADER, "", id="another wallet's: sized now"),
    pytest.param(False, ("co_f", "sub_A", "w_1", "999"), LEADER, "", id="another asset's: sized now"),
])
async def test_a_sell_routed_while_an_earlier_one_is_not_sized_goes_out_as_a_fraction(
        stack: Stack, split: bool, waiting: tuple[str, str, str, str], closing: str, expected: str) -> None:
    subs = ONLY_A if not split else (subscription("sub_A", "w_1"), subscription("sub_B", "w_1", leader=LEADER_B))
    await _start(stack, b_bought=split, subs=subs)
    coid, sub, wallet, asset = waiting
    await _unsized(stack, coid, sub, wallet, asset)
    routed = await _route(stack, "lt_half", closing, "50")
    [order] = routed.orders
    assert (order.sell_fraction, order.size != "") == (expected, not expected), order


@pytest.mark.integration
async def test_once_the_earlier_sell_is_sized_the_next_one_is_sized_on_what_it_leaves(stack: Stack) -> None:
    await _start(stack, b_bought=False, subs=ONLY_A)
    await _unsized(stack, "co_f", "sub_A")
    first = await _route(stack, "lt_a_half", LEADER, "50")
    assert first.orders[0].sell_fraction == "0.5"  # and claimed with 0 shares, indexed: behind co_f
    assert await reservations.size_claim(stack.redis, "co_f", 20_000_000)  # the executor sized co_f: 20
    second = await _route(stack, "lt_a_quarter", LEADER, "25")
    assert second.orders[0].sell_fraction == "0.5"  # the first one is not sized yet either
    assert await reservations.size_claim(stack.redis, first.orders[0].client_order_id, 40_000_000)
    assert await reservations.size_claim(stack.redis, second.orders[0].client_order_id, 20_000_000)
    third = await _route(stack, "lt_a_eighth", LEADER, "12.5")
    assert _decided(third) == [("sub_A", "10")]  # half of the 20 the three SELLs in flight leave
