"""An emit whose reply was lost (the script may have appended) must still reach a caught-up stream reader."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.exceptions

from services.router.adapters.redis_state import _EMIT
from tests.helpers import eventually, internal_channel
from tests.router.conftest import Stack, leader_trade, subscription
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration


async def test_router_emit_whose_reply_was_lost_still_reaches_a_caught_up_stream_reader(stack: Stack) -> None:
    """The router's emit script ran in Redis (the RoutedTrade is in tt:stream:routed_trades, its marker and
    claims are set) but its reply never arrived (timeout / connection drop). The retry finds the marker and only
    writes the rows. The executor, tailing StreamRoutedTrades (served from the router's in-memory LiveFeed once
    caught up), must still receive that RoutedTrade: otherwise its copies are never placed."""
    await stack.add(subscription("sub_a", "w_a"))
    running = await stack.start_router()
    channel = internal_channel(running.grpc.port)
    stub = egrpc.RouterServiceStub(channel)
    got: list[str] = []

    async def read() -> None:  # what the executor does (TT_TUNE_EXECUTOR_ROUTED_SOURCE=router, the default)
        call = stub.StreamRoutedTrades(epb.StreamRoutedTradesRequest(after_cursor="0", consumer="review"))
        async for resp in call:
            got.append(resp.routed.trade.id)

    reader = asyncio.create_task(read())
    try:
        await stack.publish(leader_trade("lt_1"))
        await eventually(lambda: "lt_1" in got, timeout_s=15)

        fast = running.router.redis_state.redis
        real = fast.run_script
        lost = {"left": 1}

        async def reply_lost(script: Any, keys: Any, args: Any) -> Any:
            reply = await real(script, keys, args)
            if script is _EMIT and lost["left"]:
                lost["left"] -= 1
                raise redis.exceptions.TimeoutError("no reply from redis within 5s")  # what FastRedis raises
            return reply

        fast.run_script = reply_lost  # type: ignore[method-assign]
        await stack.publish(leader_trade("lt_2"))
        await eventually(lambda: running.consumer.stats.handled >= 2, timeout_s=15)
        await stack.publish(leader_trade("lt_3"))
        await eventually(lambda: "lt_3" in got, timeout_s=15)

        in_log = [rt.trade.id for rt in await stack.routed()]
        assert in_log == ["lt_1", "lt_2", "lt_3"]  # the durable log has all three
        assert "lt_2" in got, f"stream reader got {got}; the log holds {in_log}"
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await channel.close(None)
