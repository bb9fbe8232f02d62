"""A routed entry the log sets aside (too large for any gRPC message: no reader gets it) has its orders marked as
orphans, so the executor's repair pass releases their reservations: before, a set-aside part kept its followers'
reservations for good (an unreleased reservation never expires)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.routed import ORPHANS, orphan_orders
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = create_stream_redis(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


def _part(*coids: str) -> bytes:
    routed = epb.RoutedTrade(orders=[epb.Order(client_order_id=c, subscription_id=f"sub_{c}") for c in coids])
    return routed.SerializeToString()


async def test_a_set_aside_routed_entry_orphans_its_orders(redis: Any) -> None:
    log = DurableLog(redis, ROUTED_TRADES, on_set_aside=lambda payload: orphan_orders(redis, payload))
    await log.dead_letter("1-0", _part("co_a", "co_b"), "ENTRY_TOO_LARGE")
    await log.dead_letter("1-0", _part("co_a", "co_b"), "ENTRY_TOO_LARGE")  # once per process: no second follow-up
    assert sorted(await redis.smembers(ORPHANS)) == [b"co_a", b"co_b"]
    assert await redis.xlen(log.dead_letter_key) == 1


async def test_a_follow_up_that_fails_leaves_the_dead_letter_recorded(redis: Any) -> None:
    async def broken(_payload: bytes) -> None:
        raise ConnectionError("redis went away")

    log = DurableLog(redis, ROUTED_TRADES, on_set_aside=broken)
    await log.dead_letter("2-0", _part("co_c"), "ENTRY_TOO_LARGE")
    assert (log.set_aside, await redis.xlen(log.dead_letter_key)) == (1, 1)
