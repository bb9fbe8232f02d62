"""A SELL the executor restores is in the router's SELL index again.

The executor's repair pass releases the claims of a dead-lettered routed trade's orders (orphans); handed that trade
again, it restores them (``reservations.restore_many``). A router read between the release and the restore drops the
released SELL from the index: restored and not listed again, its fills came off the position while its whole
reservation stayed held back, and the router's next SELL of the position was sized too small.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.fastredis import FastRedis
from common.reservations import SHARES, USD, Reservation
from services.router.adapters.redis_state import SELLS_PREFIX, SELLS_TTL_S, RedisState
from tests.router.conftest import COND, LEADER, YES, Stack, subscription
from tests.router.test_sell_parts_routed import _route, _sold, _sql, _start

pytestmark = pytest.mark.integration

INDEX = f"{SELLS_PREFIX}w_1|{YES}"


@pytest.fixture
async def state(redis_url: str) -> AsyncIterator[RedisState]:
    """The router's Redis scripts, appending to a stream of their own (the running router's log stays clean)."""
    fast = FastRedis(redis_url, timeout_s=5.0)
    yield RedisState(fast, "tt:test:routed", marker_ttl_s=3600, stream_maxlen=10_000)
    fast.close()


async def _orphaned_and_dropped(r: aioredis.Redis, state: RedisState, coid: str) -> None:
    """The repair pass releases the orphan's claim, then the router reads the index (dropping it)."""
    assert (await reservations.release_many(r, [coid]))[0] > 0
    view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
    assert ("w_1", YES) not in view.sells
    assert await r.smembers(INDEX) == set()


async def test_a_restored_sell_is_listed_again_with_its_subscription(r: aioredis.Redis, state: RedisState) -> None:
    sell = Reservation("co_s", "w_1", SHARES, YES, 30_000_000, "lt_s")
    assert (await state.emit("lt_s", b"p", [sell], "sub_B")).status == "ok"
    assert (await state.emit("lt_b", b"p", [Reservation("co_b", "w_1", USD, COND, 5_000_000, "lt_b")])).status == "ok"
    await _orphaned_and_dropped(r, state, "co_s")
    assert await reservations.release(r, "co_b") == 5_000_000
    await r.expire(INDEX, 60)  # nothing there: the restore sets the index's TTL afresh below

    assert await reservations.restore_many(r, ["co_s", "co_b"], {"co_s": "sub_B", "co_b": "sub_B"}) == [
        30_000_000, 5_000_000]
    assert await r.smembers(INDEX) == {"co_s|sub_B"}
    assert SELLS_TTL_S - 5 < await r.ttl(INDEX) <= SELLS_TTL_S
    assert await r.keys(SELLS_PREFIX + "*") == [INDEX]  # a BUY has no index
    view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
    assert view.sells[("w_1", YES)] == (("co_s", 30_000_000),)
    assert view.sell_subscriptions == {"co_s": "sub_B"}


async def test_a_restored_sell_of_no_known_subscription_is_listed_by_its_id(r: aioredis.Redis,
                                                                            state: RedisState) -> None:
    """Restored without its subscription: a bare member, as the router wrote before subscriptions were kept (its
    fills come off, its subscription is not known)."""
    assert (await state.emit("lt_s", b"p", [Reservation("co_s", "w_1", SHARES, YES, 0, "lt_s")],
                             "sub_A")).status == "ok"  # a fraction SELL, not sized yet
    await reservations.size_claim(r, "co_s", 12_000_000)
    await _orphaned_and_dropped(r, state, "co_s")
    assert await reservations.restore_many(r, ["co_s"]) == [12_000_000]
    assert await r.smembers(INDEX) == {"co_s"}
    view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
    assert view.sells[("w_1", YES)] == (("co_s", 12_000_000),) and view.sell_subscriptions == {}


async def test_a_restore_of_a_claim_not_released_leaves_the_index_as_it_is(r: aioredis.Redis,
                                                                           state: RedisState) -> None:
    sell = Reservation("co_s", "w_1", SHARES, YES, 0, "lt_s")
    assert (await state.emit("lt_s", b"p", [sell], "sub_A")).status == "ok"
    assert await reservations.restore_many(r, ["co_s", "co_unknown"], {"co_s": "sub_X"}) == [0, 0]
    assert await r.smembers(INDEX) == {"co_s|sub_A"}
    assert await r.keys(SELLS_PREFIX + "*") == [INDEX]


@pytest.mark.parametrize(("split", "known", "expected"), [
    # sub_A alone holds 100; its SELL of 30 filled 10: 90 held, 20 still being sold; the leader sells half: 35
    pytest.param(False, False, "35", id="no split: listed by its id, its 10 filled come off"),
    # sub_A 100, sub_B 50; sub_B's SELL of 30 filled 10; leader A closes: sub_A's 100, sub_B's SELL takes sub_B's
    pytest.param(True, True, "100", id="split: listed as its subscription's"),
    pytest.param(True, False, "80", id="split, subscription not given: held back from every part"),
])
async def test_the_next_sell_after_a_restore_is_sized_on_what_the_restored_sell_leaves(
        stack: Stack, state: RedisState, split: bool, known: bool, expected: str) -> None:
    sub = "sub_B" if split else "sub_A"
    await _start(stack, b_bought=split,
                 subs=() if split else (subscription("sub_A", "w_1"),))
    sell = Reservation("co_old", "w_1", SHARES, YES, 30_000_000, "lt_old")
    assert (await state.emit("lt_old", b"p", [sell], sub)).status == "ok"
    await _sold(stack.db_url, "co_old", sub, "10", "0.5")
    assert _sql(stack.db_url, "SELECT sum(size) FROM positions")[0][0] == (140 if split else 90)
    await _orphaned_and_dropped(stack.redis, state, "co_old")
    if known:
        assert await reservations.restore_many(stack.redis, ["co_old"], {"co_old": sub}) == [30_000_000]
    else:
        assert await reservations.restore_many(stack.redis, ["co_old"]) == [30_000_000]

    routed = await _route(stack, "lt_a", LEADER, "100" if split else "50")
    assert [(o.subscription_id, o.size) for o in routed.orders] == [("sub_A", expected)], routed
