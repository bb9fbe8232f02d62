"""A dead-lettered routed trade delivered again: the executor died between marking its orders orphaned and saving
its cursor past it, so the next start reads the trade again, and its intents insert fine this time. The repair pass
of the start released the orphans' reservations (they had no order row yet); the orders that now run must hold
their reservations again, or the follower's next copies pass the risk caps beside them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.cancel import stop_tasks
from common.consumer import ResumableConsumer
from common.fastredis import FastRedis
from common.livefeed import LiveFeed
from common.retry import Backoff
from common.storage import create_pool
from common.streams import ORDER_EVENTS, DurableLog, create_stream_redis
from services.executor.admission import OrderAdmission
from services.executor.domain.order_intake import IntakeRules
from services.executor.journal import Journal
from services.executor.order_runner import OrderRunner, RunnerConfig
from services.executor.releases import ORPHANS_KEPT_S, Repairs, orphaned, releasing_dead_letters
from services.router.outbound import reservation_lines
from tests.executor.conftest import make_order, rows
from tests.executor.test_dead_letters import Cursors
from tests.executor.test_dead_letters import OutageStore as PoisonOnce
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


async def _held(r: Any, wallet: str) -> int:
    return (await reservations.read(r, [wallet]))[wallet].total_usd_micro


async def test_a_dead_lettered_trade_delivered_again_runs_holding_its_reservation(db_url: str, redis_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    r = aioredis.from_url(redis_url, decode_responses=True)
    sr = create_stream_redis(redis_url)
    log_ = DurableLog(sr, ORDER_EVENTS, live=LiveFeed())
    await log_.prime()
    store = PoisonOnce(pool)
    journal = Journal(store, r, log_, reservations.release_many, sweep_interval_s=0.1)
    runner = OrderRunner(journal=journal, venues={}, gates={}, redis=r, config=RunnerConfig())
    fast = FastRedis(redis_url)  # the executor's client for per-order commands, as in app.py
    admission = OrderAdmission(runner, store, fast, RULES, intent_retry_s=0.0, repairs=journal.repairs)
    order = make_order(1, routed_time_ns=time.time_ns())
    routed = epb.RoutedTrade(orders=[order])
    wallet = order.follower_wallet_id
    await r.eval(reservations.LUA_FUNCTIONS + "return tt_claim_line(ARGV[1])", 0, reservation_lines(routed))
    assert await _held(r, wallet) == 10_000_000

    dead: list[str] = []

    async def record(cursor: str, item: epb.RoutedTrade, exc: BaseException) -> None:
        dead.append(cursor)

    async def stream(after: str) -> AsyncIterator[tuple[str, epb.RoutedTrade]]:
        if after < "1-0":
            yield "1-0", routed
        await asyncio.Event().wait()

    def consumer(cursors: Cursors) -> ResumableConsumer[epb.RoutedTrade]:
        return ResumableConsumer("executor", stream, admission.handle, cursors, start="0-0",
                                 dead_letter=releasing_dead_letters(record, r), backoff=Backoff(0.01, 0.02),
                                 max_handler_attempts=2)

    saved = Cursors()
    jtask = asyncio.create_task(journal.run())
    first = asyncio.create_task(consumer(saved).run())
    again: asyncio.Task[None] | None = None
    try:
        # the dead-letter step done (orders marked orphaned, cursor saved): a cancel inside its Redis calls could
        # stop it before the mark, or be swallowed by redis-py and leave the consumer running
        await eventually(lambda: dead == ["1-0"] and saved.saved == {"executor": "1-0"}, timeout_s=5)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)

        async def released() -> bool:
            return await _held(r, wallet) == 0

        await eventually(released, timeout_s=5)  # the repair pass released the orphan's reservation
        store.down = False
        again = asyncio.create_task(consumer(Cursors()).run())  # the crash lost the save: the trade is read again
        await eventually(lambda: rows(db_url, "SELECT state FROM orders WHERE client_order_id = %s",
                                      order.client_order_id) != [], timeout_s=5)
        state = rows(db_url, "SELECT state FROM orders WHERE client_order_id = %s", order.client_order_id)[0][0]
        assert state not in ("FILLED", "CANCELLED", "REJECTED", "LOST", "FAILED")
        held = await _held(r, wallet)
        assert held == 10_000_000, (f"order {order.client_order_id} runs ({state}) with {held} micro-USD reserved: "
                                    "its reservation was released as an orphan's")
    finally:
        await stop_tasks([t for t in (first, again, jtask) if t is not None])  # redis-py may swallow a cancel
        await runner.close()
        await pool.close()
        await fast.aclose()
        await r.aclose()
        await sr.aclose()


class SlowRows:
    """An order store whose row lookup waits until ``go`` is set (the row is inserted meanwhile)."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.asked = asyncio.Event()

    async def known(self, client_order_ids: list[str]) -> set[str]:
        self.asked.set()
        await self.go.wait()
        return set()

    async def last_ended(self, before: object, window_s: float) -> tuple[None, list[str]]:
        return None, []


async def test_an_order_inserted_while_a_pass_releases_it_waits_for_the_pass_then_is_restored(
        redis_url: str) -> None:
    """The pass read no row for the orphan, the admission inserted it meanwhile: the admission waits for the pass's
    release before it restores the reservation, so the order never runs with it released."""
    r = aioredis.from_url(redis_url, decode_responses=True)
    rows_ = SlowRows()
    repairs = Repairs(r, rows_, reservations.release_many, server_id=_same_server)  # type: ignore[arg-type]
    claim = reservations.Reservation("co_race", "w_race", reservations.USD, "0xm", 4_000_000, "lt_1")
    try:
        await reservations.reserve(r, [claim])
        await orphaned(r, ["co_race"])
        sweep = asyncio.create_task(repairs.run())
        await rows_.asked.wait()
        asking = asyncio.create_task(repairs.take_orphans(["co_race", "co_other"]))
        await asyncio.sleep(0.05)
        assert not asking.done()  # the pass under way may release it: waited for
        rows_.go.set()
        await sweep
        assert await asking == ["co_race"]
        assert await repairs.take_orphans(["co_race"]) == []  # taken once
        assert await _held(r, "w_race") == 0
        assert await reservations.restore_many(r, ["co_race"]) == [4_000_000]
        assert await _held(r, "w_race") == 4_000_000
        assert await reservations.restore_many(r, ["co_race"]) == [0]  # a claim not released is left as it is
        assert await reservations.release(r, "co_race") == 4_000_000  # the order's own end releases it once
        assert await _held(r, "w_race") == 0
    finally:
        await r.aclose()


async def _same_server() -> str:
    return "one"


class DownRedis:
    async def eval(self, *args: Any) -> Any:
        raise ConnectionError("redis away")


async def test_a_restore_that_fails_is_made_at_the_next_try(redis_url: str) -> None:
    """Redis away as an orphan's order is admitted again: the admission fails (the consumer hands the trade in again),
    and the restore is still due at the next try."""
    r = aioredis.from_url(redis_url, decode_responses=True)
    repairs = Repairs(r, SlowRows(), reservations.release_many, server_id=_same_server)  # type: ignore[arg-type]
    try:
        repairs.remember_orphans(["co_again"])
        with pytest.raises(ConnectionError):
            await repairs.restore(DownRedis(), ["co_again"])
        await reservations.reserve(r, [reservations.Reservation("co_again", "w_again", reservations.USD, "0xm",
                                                                2_000_000, "lt_1")])
        assert await reservations.release(r, "co_again") == 2_000_000  # the orphan pass's release
        await repairs.restore(r, ["co_again"])
        assert await _held(r, "w_again") == 2_000_000
        assert await repairs.take_orphans(["co_again"]) == []
    finally:
        await r.aclose()


async def test_orphans_are_forgotten_once_their_orders_could_only_be_refused_as_stale(redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=True)
    now = {"t": 100.0}
    repairs = Repairs(r, SlowRows(), reservations.release_many, server_id=_same_server,  # type: ignore[arg-type]
                      clock=lambda: now["t"])
    try:
        repairs.remember_orphans(["co_old", "co_young"])
        now["t"] += ORPHANS_KEPT_S / 2
        repairs.remember_orphans(["co_young"])
        now["t"] += ORPHANS_KEPT_S / 2 + 1
        assert await repairs.take_orphans(["co_old", "co_young"]) == ["co_young"]
        assert not repairs.orphans_to_restore()
    finally:
        await r.aclose()
