"""SELLs guard sends again: a FIRED SELL the executor may not have is re-sent at start-up, in the background, and
each re-sent SELL is stamped with the time it leaves, so the executor (which refuses orders routed over a minute
ago) still takes a stop-loss re-sent after a restart or an executor outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from common.config import Secret, StorageSettings
from common.grpcclient import channel as grpc_channel
from common.grpcserver import GrpcServer, start_server
from common.marketstate import BookSnapshot, write_book
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from services.executor.app import start as start_executor
from services.executor.config import Settings as ExecutorSettings
from services.guard.adapters.market_state import RedisMarkets
from services.guard.adapters.order_client import GrpcExecutor
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.app import start as start_guard
from services.guard.config import Settings as GuardSettings
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_index import Fired
from services.guard.firing import Firer
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    StandIns,
    add_market,
    db,
    insert_subscription,
    insert_trigger,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.guard.test_with_executor import EXECUTOR_ENV, _Router
from tests.helpers import INTERNAL, eventually, with_tuning
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration


class _NeverAnswers:
    """The executor as a killed guard saw it: the call was on its way when the process died."""

    async def submit(self, _order: epb.Order) -> epb.SubmitOrderResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def _fired_unsent(store: TriggerStore, redis: Any, trigger_id: str, fired_ns: int) -> None:
    """``trigger_id`` recorded FIRED at ``fired_ns`` by a guard killed before its SELL reached the executor."""
    firer = Firer(store, _NeverAnswers(), RedisMarkets(redis), on_order_event=lambda _e: None,
                  rearm=lambda *_a, **_k: None, clock_ns=lambda: fired_ns, max_slippage_bps=300)
    row = await store.get(trigger_id)
    assert row is not None
    task = asyncio.create_task(firer.fire(Fired(row.spec(), Decimal("0.29")), [],
                                          TickInfo(Decimal("0.29"), fired_ns // 10**6, fired_ns)))

    async def recorded() -> bool:
        fired = await store.get(trigger_id)
        return fired is not None and fired.state.value == "FIRED"

    await eventually(recorded)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def stream_redis(redis_url: str) -> AsyncIterator[Any]:
    r = create_stream_redis(redis_url)
    yield r
    await r.aclose()


async def test_a_stop_loss_resent_after_a_restart_past_the_executors_age_limit_still_sells(
        db_url: str, redis_url: str, redis: Any, stream_redis: Any, trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1")  # PAPER
    await set_position(conn, "100", "0.40")
    await conn.execute("UPDATE positions SET venue = 'PAPER'")
    await add_market(redis, min_size="1")
    now_ms = int(time.time() * 1000)
    await write_book(stream_redis, BookSnapshot(ASSET, CONDITION, ((Decimal("0.29"), Decimal(1000)),),
                                                ((Decimal("0.31"), Decimal(1000)),), Decimal("0.01"), now_ms, now_ms))
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1", subscription_id="sub_1")
    fired_ns = time.time_ns() - 90 * 10**9  # the guard that fired it was killed 90 s ago
    await _fired_unsent(trigger_store, redis, "trg_sl", fired_ns)
    stored = await trigger_row(conn, "trg_sl")
    assert stored["submitted_at"] is None

    routed = DurableLog(stream_redis, ROUTED_TRADES, block_ms=100)
    router: GrpcServer = await start_server("127.0.0.1", 0, lambda s: (
        egrpc.add_RouterServiceServicer_to_server(_Router(routed), s), ["tradingtools.execution.v1.RouterService"])[1],
        security=INTERNAL)
    executor = await start_executor(ExecutorSettings.from_env({
        **EXECUTOR_ENV, "TT_ROUTER_GRPC_TARGET": f"127.0.0.1:{router.port}"}), db_url, redis_url)
    guard = await start_guard(with_tuning(GuardSettings,
        storage=StorageSettings(Secret(db_url), Secret(redis_url)), security=INTERNAL, grpc_port=0,
        executor_target=f"127.0.0.1:{executor.server.port}", ingest_target="127.0.0.1:1",
        control_target="127.0.0.1:1", tick_source="log", perf_interval_s=60, grace_s=0.0))
    try:
        async def settled() -> dict[str, Any] | None:
            r = await trigger_row(conn, "trg_sl")
            return r if r["state"] in ("DONE", "FAILED") else None

        row = await eventually(settled, timeout_s=15)
        order = await (await conn.execute("SELECT state, reason, size FROM orders WHERE trigger_id = 'trg_sl'"
                                          )).fetchone()
        assert (row["state"], row["state_reason"], row["filled_size"]) == ("DONE", "ORDER_FILLED", Decimal(100)), (
            dict(row), order)
        assert bytes(row["fire_order"]) == bytes(stored["fire_order"])  # the recorded SELL is left as it was
        # sent once more (guard killed before it marked the SELL acknowledged): a duplicate, whatever its stamp
        channel = grpc_channel(f"127.0.0.1:{executor.server.port}", INTERNAL)
        again = epb.Order.FromString(row["fire_order"])
        for stamp in (time.time_ns(), fired_ns):
            again.routed_time_ns = stamp
            resp = await GrpcExecutor(channel, timeout_s=5).submit(again)
            assert (resp.duplicate, resp.last_event.type) == (True, epb.ORDER_EVENT_TYPE_FILLED)
        await channel.close(None)
        count = await (await conn.execute("SELECT count(*) AS n FROM orders WHERE trigger_id = 'trg_sl'")).fetchone()
        assert count is not None and count["n"] == 1
    finally:
        await guard.stop()
        await executor.stop(0)
        await router.stop(0)
        await conn.close()


class _DownThenUp:
    """An executor unreachable for its first ``failures`` calls, each failure taking ``outage_ns`` of the clock."""

    def __init__(self, clock: list[int], failures: int, outage_ns: int) -> None:
        self.clock, self.failures, self.outage_ns = clock, failures, outage_ns
        self.calls: list[epb.Order] = []

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        self.calls.append(epb.Order.FromString(order.SerializeToString()))
        if len(self.calls) <= self.failures:
            self.clock[0] += self.outage_ns
            raise ConnectionError("executor unreachable")
        return epb.SubmitOrderResponse(client_order_id=order.client_order_id)


async def test_a_sell_retried_through_an_executor_outage_leaves_with_a_fresh_stamp(
        db_url: str, redis: Any, trigger_store: TriggerStore) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    clock = [time.time_ns()]
    executor = _DownThenUp(clock, failures=2, outage_ns=40 * 10**9)
    firer = Firer(trigger_store, executor, RedisMarkets(redis), on_order_event=lambda _e: None,
                  rearm=lambda *_a, **_k: None, clock_ns=lambda: clock[0], max_slippage_bps=300)
    row = await trigger_store.get("trg_sl")
    assert row is not None
    fired_ns = clock[0]
    await firer.fire(Fired(row.spec(), Decimal("0.29")), [], TickInfo(Decimal("0.29"), fired_ns // 10**6, fired_ns))
    stored = await trigger_row(conn, "trg_sl")
    await conn.close()
    first, *_, sent = executor.calls
    assert len(executor.calls) == 3
    assert (first.routed_time_ns, sent.routed_time_ns) == (fired_ns, fired_ns + 80 * 10**9)
    sent.routed_time_ns = first.routed_time_ns
    assert sent == first  # the same SELL (same client order id): only its stamp moved
    assert epb.Order.FromString(stored["fire_order"]).routed_time_ns == fired_ns


async def test_start_up_does_not_wait_for_sells_the_executor_does_not_take(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory, trigger_store: TriggerStore) -> None:
    """An executor down at start-up, and a SELL it keeps failing, leave guard watching its triggers: the re-sends
    go on in the background, and each one the executor takes is sent."""
    conn = await db(db_url)
    for trigger_id, asset in (("trg_a", ASSET), ("trg_b", "asset_b"), ("trg_c", "asset_c")):
        await set_position(conn, "100", "0.40", asset_id=asset)
        await add_market(redis, asset, min_size="1")
        await insert_trigger(conn, trigger_id, "STOP_LOSS", price="0.30", fraction="1", asset_id=asset)
    old_ns = time.time_ns() - 5 * 10**9
    await _fired_unsent(trigger_store, redis, "trg_a", old_ns)
    await _fired_unsent(trigger_store, redis, "trg_b", old_ns + 1)
    executor = standins.executor
    executor.fail_next = 3  # down as guard starts
    take, stuck = executor._submit, asyncio.Event()

    async def failing_b(order: epb.Order) -> epb.SubmitOrderResponse:
        if order.trigger_id == "trg_b" and not stuck.is_set():
            raise RuntimeError("internal error")  # answered INTERNAL / UNKNOWN: retried
        return await take(order)

    executor._submit = failing_b  # type: ignore[method-assign]
    running = await asyncio.wait_for(make_guard(), 10)
    await wait_connected(standins.ingest)
    await standins.ingest.tick("asset_c", bid="0.25", ask="0.3")  # a stop-loss guard still watches
    await eventually(lambda: sorted(o.trigger_id for o in executor.sells) == ["trg_a", "trg_c"])
    stuck.set()
    await eventually(lambda: sorted(o.trigger_id for o in executor.sells) == ["trg_a", "trg_b", "trg_c"])
    await running.guard.drain()
    await conn.close()
