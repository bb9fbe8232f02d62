"""A SELL copy whose claim was released and then restored (the executor's orphan pass released the reservations of a
dead-lettered routed trade, and the trade was handed in again: ``reservations.restore_many``) is in flight again; the
router's read must list it again, as it did before the release, whether or not a read came in between."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.fastredis import FastRedis
from common.reservations import SHARES, Reservation
from common.streams import ROUTED_TRADES
from services.router.adapters.redis_state import RELEASED_PREFIX, SELLS_PREFIX, RedisState
from tests.router.conftest import COND, YES

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis_state(redis_url: str) -> AsyncIterator[RedisState]:
    fast = FastRedis(redis_url, timeout_s=5.0)
    yield RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
    fast.close()


def _sell(coid: str, shares: str) -> Reservation:
    return Reservation(coid, "w_1", SHARES, YES, reservations.to_micro(Decimal(shares)), "lt_s")


@pytest.mark.parametrize("read_between", [False, True])
async def test_a_restored_sell_claim_is_listed_again(r: aioredis.Redis, redis_state: RedisState,
                                                     read_between: bool) -> None:
    emitted = await redis_state.emit("lt_s", b"p", [_sell("co_sized", "40"), _sell("co_fraction", "0")],
                                     "sub_1\nsub_1")
    assert emitted.status == "ok"
    assert await reservations.release_many(r, ["co_sized", "co_fraction"]) == [40_000_000, 0]
    if read_between:  # a router SELL of the asset reads the wallet while the claims are released
        view = await redis_state.read_batch([], [YES], {(COND, YES): ["w_1"]})
        assert view.sells == {} and view.unsized == {}
        assert await r.smembers(f"{SELLS_PREFIX}w_1|{YES}") == set()
    assert await reservations.restore_many(r, ["co_sized", "co_fraction"]) == [40_000_000, 0]

    view = await redis_state.read_batch([], [YES], {(COND, YES): ["w_1"]})
    assert view.sells == {("w_1", YES): (("co_sized", 40_000_000),)}
    assert view.sell_subscriptions == {"co_sized": "sub_1"}
    assert view.unsized == {("w_1", YES): ("co_fraction",)}  # sized by the executor later: the next SELL waits too


async def test_a_released_sell_whose_claim_ends_is_forgotten(r: aioredis.Redis, redis_state: RedisState) -> None:
    emitted = await redis_state.emit("lt_s", b"p", [_sell("co_a", "40"), _sell("co_b", "5")], "sub_1\nsub_1")
    assert emitted.status == "ok"
    await reservations.release_many(r, ["co_a", "co_b"])
    assert (await redis_state.read_batch([], [YES], {(COND, YES): ["w_1"]})).sells == {}
    released = f"{RELEASED_PREFIX}w_1|{YES}"
    assert set(await r.zrange(released, 0, -1)) == {"co_a|sub_1", "co_b|sub_1"}
    await r.delete(reservations.order_key("co_a"))  # its released claim expired
    assert (await redis_state.read_batch([], [YES], {(COND, YES): ["w_1"]})).sells == {}
    assert await r.zrange(released, 0, -1) == ["co_b|sub_1"]  # still released: watched a while longer
    assert await r.ttl(released) > 0
