"""A routed part a consumer set aside after failing on it is not handled again after a crash: its cursor is saved
before the consumer goes on, not a save interval later (a second pass would set it aside twice, or admit copies whose
reservations the first dead letter already had released)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from common.consumer import DeadLetters, RedisCursorStore, ResumableConsumer
from common.logread import read_log_items
from common.retry import Backoff
from common.routed import parse_routed
from common.streams import ROUTED_TRADES, START_OLDEST, DurableLog, create_stream_redis
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration


class _DyingCursors(RedisCursorStore):
    """Cursors in Redis until the process dies: from then on nothing it would write reaches Redis."""

    dead = False

    async def set(self, consumer: str, cursor: str) -> None:
        if self.dead:
            raise ConnectionError("process killed")
        await super().set(consumer, cursor)


def _part(tid: str, part: int) -> bytes:
    routed = epb.RoutedTrade(trade=mpb.LeaderTradeEvent(id=tid), part=part, parts=3)
    routed.orders.add(client_order_id=f"co_{tid}_{part}")
    return routed.SerializeToString()


async def test_a_dead_lettered_part_is_not_handled_again_after_a_crash(redis_url: str) -> None:
    r: Any = create_stream_redis(redis_url)
    log_ = DurableLog(r, ROUTED_TRADES, block_ms=100)
    handled: list[str] = []
    poison_tries = 0

    async def handle(rt: epb.RoutedTrade) -> None:
        nonlocal poison_tries
        if rt.part == 1:
            poison_tries += 1
            raise ValueError("cannot admit this part")
        handled.append(f"{rt.trade.id}/{rt.part}")

    def consumer(cursors: RedisCursorStore) -> ResumableConsumer[epb.RoutedTrade]:
        return ResumableConsumer("executor", read_log_items(log_, parse_routed, block_ms=100), handle, cursors,
                                 start=START_OLDEST, backoff=Backoff(0.001, 0.01), rng=random.Random(1),
                                 dead_letter=DeadLetters(r, "executor", lambda rt: rt.SerializeToString()),
                                 save_interval_s=2.0)

    try:
        for part in range(3):
            await log_.append(_part("lt_big", part))
        dying = _DyingCursors(r)
        first = asyncio.create_task(consumer(dying).run())
        await eventually(lambda: handled == ["lt_big/0", "lt_big/2"])
        dying.dead = True  # killed (-9) right after: what it had not saved is gone
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert await r.xlen("tt:dlq:executor") == 1 and poison_tries == 5

        await log_.append(_part("lt_next", 0))
        second = asyncio.create_task(consumer(RedisCursorStore(r)).run())
        try:
            await eventually(lambda: handled[-1:] == ["lt_next/0"])
        finally:
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)
        assert (await r.xlen("tt:dlq:executor"), poison_tries) == (1, 5), "the dead-lettered part was handled again"
    finally:
        await r.aclose()
