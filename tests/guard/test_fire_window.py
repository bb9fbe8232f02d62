"""Fires come first: guard's background publishers wait while a fire is under way (at most ``max_wait_s``),
from the tick that decided it until its SELL is answered. Pure asyncio for the window and the loops; real
PostgreSQL and Redis where a fire and a publisher need them."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from common.bands import BANDS_KEY
from common.fastredis import FastRedis
from common.marketstate import MarketInfo
from services.guard.adapters.band_publisher import BandPublisher
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, State, TriggerSpec
from services.guard.firing import Firer
from services.guard.loops import FireWindow, Kicked
from tests.guard.standins import CONDITION, armed_stop, db
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb


async def _turns(n: int = 20) -> None:
    """Let every ready task run a few times (nothing here waits on I/O)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_without_a_fire_the_publishers_do_not_wait() -> None:
    window = FireWindow()
    await window.yield_to_fires()
    assert (window.open, window.held, window.overrun) == (0, 0, 0)


async def test_a_publisher_waits_until_every_fire_under_way_has_ended() -> None:
    window = FireWindow(max_wait_s=60)
    window.begin()
    window.begin()
    waiting = asyncio.create_task(window.yield_to_fires())
    await _turns()
    window.end()
    await _turns()
    assert not waiting.done()  # one fire is still under way
    window.end()
    await asyncio.wait_for(waiting, timeout=5)
    assert (window.open, window.held, window.overrun) == (0, 1, 0)
    window.end()  # an extra end never makes the count negative
    assert window.open == 0
    await window.yield_to_fires()
    assert window.held == 1


async def test_a_storm_of_fires_delays_a_publisher_at_most_max_wait_s() -> None:
    window = FireWindow(max_wait_s=0.05)
    window.begin()  # never ended
    await asyncio.wait_for(window.yield_to_fires(), timeout=5)
    assert (window.open, window.held, window.overrun) == (1, 1, 1)


@pytest.mark.parametrize("max_wait_s", [0.0, -1.0])
def test_the_wait_must_be_positive(max_wait_s: float) -> None:
    with pytest.raises(ValueError, match="max_wait_s"):
        FireWindow(max_wait_s=max_wait_s)


class _Counting(Kicked):
    def __init__(self, window: FireWindow) -> None:
        super().__init__("counting", yield_to=window.yield_to_fires)
        self.steps = 0

    async def step(self) -> None:
        self.steps += 1


async def test_a_kicked_loop_runs_after_the_fire_and_kicks_meanwhile_share_that_run() -> None:
    window = FireWindow(max_wait_s=60)
    loop = _Counting(window)
    task = asyncio.create_task(loop.run())
    try:
        window.begin()
        for _ in range(3):
            loop.kick()
            await _turns()
        assert loop.steps == 0
        window.end()
        await eventually(lambda: loop.steps == 1)
        await _turns()
        assert loop.steps == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.integration
async def test_the_band_publisher_writes_after_the_fire(redis: Any, fast_redis: FastRedis) -> None:
    window = FireWindow(max_wait_s=60)
    engine = Engine()
    pub = BandPublisher(fast_redis, lambda: engine, lambda: 0, beat_s=60.0, min_interval_s=0.0,
                        yield_to=window.yield_to_fires)
    task = asyncio.create_task(pub.run())
    try:
        await eventually(lambda: pub.writes == 1)  # the first run rewrites the hash
        window.begin()
        engine.upsert(TriggerSpec("trg_sl", "asset-1", Kind.STOP_LOSS, trigger_price=Decimal("0.30")))
        pub.kick()  # a band changed
        await _turns()
        await asyncio.sleep(0.05)  # a Redis round trip would have been made by now
        assert pub.writes == 1
        window.end()
        await eventually(lambda: pub.writes == 2)
        assert await redis.hkeys(BANDS_KEY) == ["asset-1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _HeldExecutor:
    """Takes SELLs and answers each once ``release`` is set."""

    def __init__(self) -> None:
        self.orders: list[epb.Order] = []
        self.release = asyncio.Event()

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        self.orders.append(order)
        await self.release.wait()
        return epb.SubmitOrderResponse(client_order_id=order.client_order_id)


class _Markets:
    async def market(self, asset_id: str) -> MarketInfo:
        return MarketInfo(asset_id, CONDITION, Decimal("0.01"), Decimal(5))


def _firer(store: TriggerStore, executor: _HeldExecutor) -> Firer:
    return Firer(store, executor, _Markets(), on_order_event=lambda _ev: None, rearm=lambda *_a, **_k: None,
                 clock_ns=time.time_ns, max_slippage_bps=300)


@pytest.mark.integration
async def test_a_fire_is_in_the_window_from_its_launch_until_its_sell_is_answered(
        db_url: str, trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    fired = await armed_stop(conn, trigger_store)
    executor = _HeldExecutor()
    firer = _firer(trigger_store, executor)
    fire = firer.launch(fired, [], TickInfo(Decimal("0.30")))
    assert firer.window.open == 1  # counted before its task runs: publishers kicked by the same tick wait
    task = asyncio.create_task(fire)
    await eventually(lambda: len(executor.orders) == 1)
    await _turns()
    assert firer.window.open == 1  # SELL sent, not answered yet
    executor.release.set()
    await eventually(lambda: firer.window.open == 0)
    result = await asyncio.wait_for(task, timeout=10)
    assert result is not None and result.row is not None and result.row.state is State.FIRED
    await conn.close()


@pytest.mark.integration
async def test_a_fire_that_sells_nothing_leaves_the_window_when_it_ends(db_url: str,
                                                                        trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    fired = await armed_stop(conn, trigger_store, "trg_none", held=None)  # no position: nothing to sell
    executor = _HeldExecutor()
    firer = _firer(trigger_store, executor)
    result = await asyncio.wait_for(firer.launch(fired, [], TickInfo(Decimal("0.30"))), timeout=10)
    assert result is not None and result.row is not None and result.row.state is State.CANCELLED
    assert firer.window.open == 0 and executor.orders == []
    await conn.close()


class _FlakyExecutor(_HeldExecutor):
    """The first submission fails (the executor restarting); the next ones wait for ``release``."""

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        if not self.orders:
            self.orders.append(order)
            raise ConnectionError("executor unavailable")
        return await super().submit(order)


@pytest.mark.integration
async def test_a_sell_being_retried_no_longer_holds_the_publishers(db_url: str, trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    fired = await armed_stop(conn, trigger_store)
    executor = _FlakyExecutor()
    firer = _firer(trigger_store, executor)
    task = asyncio.create_task(firer.launch(fired, [], TickInfo(Decimal("0.30"))))
    await eventually(lambda: len(executor.orders) == 2)  # the retry is under way, unanswered
    assert firer.window.open == 0 and not task.done()
    executor.release.set()
    result = await asyncio.wait_for(task, timeout=10)
    assert result is not None and result.row is not None and result.row.state is State.FIRED
    assert {o.client_order_id for o in executor.orders} == {result.row.order_id}
    await conn.close()
