"""Reservation releases Redis may not have: after the Redis server changed (a restart, a failover), the releases
of the last minute are done again; a release Redis kept is not done twice."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.releases import Repairs

pytestmark = pytest.mark.integration


def _claim(coid: str, micro: int) -> reservations.Reservation:
    return reservations.Reservation(coid, "w_1", reservations.USD, "0xm", micro, "lt_1")


async def _held(r: aioredis.Redis) -> int:
    return (await reservations.read(r, ["w_1"]))["w_1"].total_usd_micro


async def test_releases_redis_lost_are_done_again_once_the_server_changed(r: aioredis.Redis, db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    server = {"id": "a"}
    now = {"t": 1000.0}

    async def server_id() -> str:
        return server["id"]

    repairs = Repairs(r, OrderStore(pool), reservations.release_many, server_id=server_id, clock=lambda: now["t"],
                      keep_s=60)
    try:
        await reservations.reserve(r, [_claim("co_old", 1_000_000), _claim("co_1", 2_000_000),
                                       _claim("co_2", 3_000_000)])
        for coid in ("co_old", "co_1", "co_2"):
            assert await reservations.release(r, coid) > 0
        repairs.released(["co_old"])
        now["t"] += 61
        repairs.released(["co_1", "co_2"])
        await repairs.run()  # the first pass learns the server
        assert await _held(r) == 0
        # the server fails over to a replica that missed the last releases (and one older one): their claims
        # and amounts are as before the releases
        await r.delete(*(reservations.ORDER_PREFIX + c for c in ("co_old", "co_1", "co_2")))
        await reservations.reserve(r, [_claim("co_old", 1_000_000), _claim("co_1", 2_000_000),
                                       _claim("co_2", 3_000_000)])
        await repairs.run()  # same server: nothing done
        assert await _held(r) == 6_000_000
        server["id"] = "b"
        await repairs.run()
        assert await _held(r) == 1_000_000  # the last minute's releases again; co_old is older than that
        assert repairs.redone == 2
        await repairs.run()
        assert await _held(r) == 1_000_000 and repairs.redone == 2
    finally:
        await pool.close()
