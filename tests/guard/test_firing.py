"""Guard end to end on real PostgreSQL and Redis with gRPC stand-ins: price paths drive SELLs exactly once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc
import pytest

from common.ids import hash_id
from common.streams import TRIGGER_EVENTS, DurableLog, create_stream_redis
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    WALLET,
    WALLET_ID,
    ExecutorStandIn,
    StandIns,
    add_market,
    db,
    insert_trigger,
    publish_change,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.helpers import eventually, internal_channel
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.guard.v1 import guard_pb2 as gpb
from tradingtools.guard.v1 import guard_pb2_grpc as ggrpc
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration


async def _events(redis_url: str) -> list[gpb.TriggerEvent]:
    r = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(r, TRIGGER_EVENTS)
        return [gpb.TriggerEvent.FromString(p) for _c, p in await log_.read("0-0", count=10_000, block_ms=0)]
    finally:
        await r.aclose()


async def test_price_path_drives_one_sell_of_the_right_size_and_the_fill_settles_it(
        db_url: str, redis_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.4")
    await add_market(redis)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="0.5")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.80", size="20")
    running = await make_guard()

    async def watched() -> bool:
        return await redis.smembers("tt:watch:triggers") == {ASSET}

    await eventually(watched)  # the watch set is published in the background after start-up
    await wait_connected(standins.ingest)
    for bid in ("0.40", "0.35", "0.31", "0.45"):
        await standins.ingest.tick(bid=bid, ask="0.5")
    await standins.ingest.tick(bid="0.30", ask="0.32")  # crosses the stop-loss exactly
    await eventually(lambda: len(standins.executor.sells) == 1)
    order = standins.executor.sells[0]
    assert order.client_order_id == hash_id("co", "trg_sl", "1")
    assert (order.side, order.order_type, order.origin) == (cpb.SIDE_SELL, epb.ORDER_TYPE_FAK, epb.ORDER_ORIGIN_TRIGGER)
    assert (order.size, order.reference_price, order.min_order_size, order.condition_id) == (
        "50", "0.3", "5", CONDITION)
    assert (order.follower_wallet_id, order.follower_proxy, order.trigger_id) == (WALLET_ID, WALLET, "trg_sl")
    assert order.received_time_ns > 0

    async def done() -> bool:
        return (await trigger_row(conn, "trg_sl"))["state"] == "DONE"

    await eventually(done)

    async def acknowledged() -> dict[str, Any] | None:
        row = await trigger_row(conn, "trg_sl")
        return row if row["submitted_at"] is not None else None  # recorded in batches after SubmitOrder

    row = await eventually(acknowledged)
    assert (row["fire_count"], row["order_id"], row["fire_size"], row["filled_size"]) == (
        1, order.client_order_id, Decimal(50), Decimal(50))
    assert row["submitted_at"] is not None and row["fired_time"] is not None
    # the take-profit is still armed on the rest; further ticks at the same price send nothing more
    await standins.ingest.tick(bid="0.29", ask="0.31")
    await standins.ingest.tick(bid="0.81", ask="0.82")
    await eventually(lambda: len(standins.executor.sells) == 2)
    assert standins.executor.sells[1].size == "20"
    await running.guard.drain()
    assert len(standins.executor.calls) == 2

    events = await eventually(lambda: _typed(redis_url, "trg_sl", 2))
    assert [e.type for e in events] == [gpb.TRIGGER_EVENT_TYPE_FIRED, gpb.TRIGGER_EVENT_TYPE_DONE]
    assert events[0].price == "0.3" and events[0].trigger.order_id == order.client_order_id
    await conn.close()


async def _typed(redis_url: str, trigger_id: str, n: int) -> list[gpb.TriggerEvent] | None:
    events = [e for e in await _events(redis_url) if e.trigger.id == trigger_id]
    return events if len(events) >= n else None


async def test_stale_book_fires_nothing_and_says_so(db_url: str, redis_url: str, redis: Any, standins: StandIns,
                                                   make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.20", ask="0.25", stale=True)  # ingest says the book is stale
    await standins.ingest.tick(bid="0.20", ask="0.25", age_s=10)  # received 10 s ago: too old
    await standins.ingest.tick(bid="0.20", ask="0.25", kind=mpb.TICK_KIND_STALE)

    async def held() -> bool:
        return (await trigger_row(conn, "trg_sl"))["state_reason"] == "BOOK_STALE"

    await eventually(held)
    await eventually(lambda: running.guard.stats.stale_ticks == 3)
    await running.guard.drain()
    assert standins.executor.calls == []
    row = await trigger_row(conn, "trg_sl")
    assert row["state"] == "ARMED" and row["fire_count"] == 0
    events = await eventually(lambda: _typed(redis_url, "trg_sl", 1))
    assert [e.type for e in events] == [gpb.TRIGGER_EVENT_TYPE_HELD_STALE]  # once, not per tick
    assert events[0].reason == "BOOK_STALE"
    # a fresh price fires it
    await standins.ingest.tick(bid="0.29", ask="0.31")
    await eventually(lambda: len(standins.executor.sells) == 1)
    assert standins.executor.sells[0].size == "100"
    await conn.close()


async def test_oco_sibling_cancelled_with_the_fire(db_url: str, redis_url: str, redis: Any, standins: StandIns,
                                                  make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "40")
    await add_market(redis)
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.7", fraction="1", oco="grp_a")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.3", fraction="1", oco="grp_a")
    await insert_trigger(conn, "trg_trail", "TRAILING_STOP", trail="10", fraction="1", oco="grp_a")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.5", ask="0.6")
    await standins.ingest.tick(bid="0.75", ask="0.8")  # TP crosses; trailing mark would be 0.75
    await eventually(lambda: len(standins.executor.sells) == 1)
    await running.guard.drain()
    rows = {t: await trigger_row(conn, t) for t in ("trg_tp", "trg_sl", "trg_trail")}
    assert rows["trg_tp"]["state"] in ("FIRED", "DONE")
    assert [(rows[t]["state"], rows[t]["state_reason"]) for t in ("trg_sl", "trg_trail")] == [
        ("CANCELLED", "OCO_SIBLING_FIRED")] * 2
    # the cancellation committed with the fire: same transaction timestamp
    assert rows["trg_sl"]["update_time"] == rows["trg_tp"]["fired_time"]
    await standins.ingest.tick(bid="0.1", ask="0.2")
    await running.guard.drain()
    assert len(standins.executor.sells) == 1
    assert running.guard.engine.assets() == set()
    await eventually(lambda: _empty_watch(redis))
    await conn.close()


async def _empty_watch(redis: Any) -> bool:
    return not await redis.smembers("tt:watch:triggers")


async def test_ladder_rungs_in_one_tick_size_against_each_other(db_url: str, redis: Any, standins: StandIns,
                                                                make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_l1", "TAKE_PROFIT", price="0.6", fraction="0.5", oco="grp_l")
    await insert_trigger(conn, "trg_l2", "TAKE_PROFIT", price="0.65", fraction="0.5", oco="grp_l")
    standins.executor.auto_fill = False
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.7", ask="0.72")
    await eventually(lambda: len(standins.executor.sells) == 2)
    await running.guard.drain()
    assert sorted(o.size for o in standins.executor.sells) == ["25", "50"]  # never more than held in total
    await conn.close()


async def test_no_position_cancels_and_below_minimum_fails_without_sending(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "3")
    await set_position(conn, "0", asset_id="other")
    await add_market(redis, min_size="5")
    await add_market(redis, "other", min_size="5")
    await insert_trigger(conn, "trg_small", "STOP_LOSS", price="0.3", fraction="1")
    await insert_trigger(conn, "trg_gone", "STOP_LOSS", price="0.3", fraction="1", asset_id="other")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.2", ask="0.3")
    await standins.ingest.tick("other", bid="0.2", ask="0.3")

    async def settled() -> bool:
        return (await trigger_row(conn, "trg_small"))["state"] == "FAILED" and \
            (await trigger_row(conn, "trg_gone"))["state"] == "CANCELLED"

    await eventually(settled)
    await running.guard.drain()
    assert (await trigger_row(conn, "trg_small"))["state_reason"] == "SIZE_BELOW_MIN_ORDER"
    assert (await trigger_row(conn, "trg_gone"))["state_reason"] == "NO_POSITION"
    assert standins.executor.calls == []
    await conn.close()


async def test_rest_changes_reach_the_engine_through_notifications(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis)
    running = await make_guard()
    guard = running.guard
    await insert_trigger(conn, "trg_new", "TAKE_PROFIT", price="0.9", fraction="1")
    await publish_change(redis, "trg_new")
    await eventually(lambda: "trg_new" in guard.engine)
    await eventually(lambda: _watching(redis))
    # PATCH of the price
    await conn.execute("UPDATE triggers SET trigger_price = 0.6, version = version + 1 WHERE id = 'trg_new'")
    await publish_change(redis, "trg_new")
    await eventually(lambda: (spec := guard.engine.get("trg_new")) is not None and spec.trigger_price == Decimal("0.6"))
    # DELETE
    await conn.execute("UPDATE triggers SET state = 'CANCELLED', state_reason = 'CANCELLED_BY_USER'"
                       " WHERE id = 'trg_new'")
    await publish_change(redis, "trg_new", "remove")
    await eventually(lambda: "trg_new" not in guard.engine)
    # a missed notification (version gap) triggers a full resync
    await insert_trigger(conn, "trg_gap", "STOP_LOSS", price="0.2", fraction="1")
    await redis.incr("tt:triggers:version")  # the message for this version was lost
    await publish_change(redis, "unrelated")
    await eventually(lambda: "trg_gap" in guard.engine)
    # nothing announced at all: the periodic version check catches it
    await insert_trigger(conn, "trg_silent", "STOP_LOSS", price="0.2", fraction="1")
    await redis.incr("tt:triggers:version")
    await eventually(lambda: "trg_silent" in guard.engine)
    assert running.sync.gaps >= 2
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.65", ask="0.7")  # the cancelled TP would have fired here
    await standins.ingest.tick(bid="0.19", ask="0.21")
    await eventually(lambda: len(standins.executor.sells) == 1)
    assert standins.executor.sells[0].trigger_id in {"trg_gap", "trg_silent"}
    await conn.close()


async def _watching(redis: Any) -> bool:
    return ASSET in await redis.smembers("tt:watch:triggers")


async def test_market_resolution_cancels_the_assets_triggers(db_url: str, redis: Any, standins: StandIns,
                                                             make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_trigger(conn, "trg_a", "STOP_LOSS", price="0.3", fraction="1")
    await insert_trigger(conn, "trg_b", "TAKE_PROFIT", price="0.9", fraction="1", asset_id="winner")
    await insert_trigger(conn, "trg_c", "TAKE_PROFIT", price="0.9", fraction="1", asset_id="elsewhere")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(kind=mpb.TICK_KIND_MARKET_RESOLVED, winning="winner", bid="0.01", ask="0.02")

    async def cancelled() -> bool:
        rows = [await trigger_row(conn, t) for t in ("trg_a", "trg_b")]
        return all(r["state"] == "CANCELLED" and r["state_reason"] == "MARKET_RESOLVED" for r in rows)

    await eventually(cancelled)
    assert (await trigger_row(conn, "trg_c"))["state"] == "ARMED"
    assert running.guard.engine.assets() == {"elsewhere"}
    assert standins.executor.calls == []
    await conn.close()


async def test_trailing_mark_survives_a_restart(db_url: str, redis: Any, standins: StandIns,
                                                make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "10")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_trail", "TRAILING_STOP", trail="10", activation="0.5", fraction="1")
    running = await make_guard()
    await wait_connected(standins.ingest)
    for bid in ("0.45", "0.5", "0.62", "0.6"):
        await standins.ingest.tick(bid=bid, ask="0.7")

    async def persisted() -> bool:
        return (await trigger_row(conn, "trg_trail"))["high_water_mark"] == Decimal("0.62")

    await eventually(persisted)
    await running.stop()
    running = await make_guard()
    spec = running.guard.engine.get("trg_trail")
    assert spec is not None and spec.high_water_mark == Decimal("0.62")
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.56", ask="0.6")  # 0.62 x 0.9 = 0.558: not yet
    await standins.ingest.tick(bid="0.55", ask="0.6")
    await eventually(lambda: len(standins.executor.sells) == 1)
    await conn.close()


async def test_malformed_ticks_and_executor_outage_lose_nothing(db_url: str, redis: Any, standins: StandIns,
                                                                make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "10")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.3", fraction="1")
    standins.executor.fail_next = 2
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="abc", ask="0.3")
    await standins.ingest.tick(bid="0.2", ask="0.3")
    await eventually(lambda: len(standins.executor.sells) == 1)
    assert running.guard.stats.bad_ticks == 1
    assert running.guard.firer.stats.submit_retries == 2
    assert len(standins.executor.calls) == 1  # the two failures never reached the order book
    await conn.close()


async def test_stream_trigger_events_over_grpc(db_url: str, redis: Any, standins: StandIns,
                                               make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "10")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.3", fraction="1")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.2", ask="0.3")
    channel = internal_channel(running.server.port)
    stub = ggrpc.GuardServiceStub(channel)
    got: list[gpb.StreamTriggerEventsResponse] = []
    call = stub.StreamTriggerEvents(gpb.StreamTriggerEventsRequest(after_cursor="0", consumer="test"))
    async for resp in call:
        got.append(resp)
        if resp.event.type == gpb.TRIGGER_EVENT_TYPE_DONE:
            break
    call.cancel()
    assert [r.event.type for r in got] == [gpb.TRIGGER_EVENT_TYPE_FIRED, gpb.TRIGGER_EVENT_TYPE_DONE]
    assert got[0].cursor < got[1].cursor or len(got[0].cursor) < len(got[1].cursor)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.StreamTriggerEvents(gpb.StreamTriggerEventsRequest(after_cursor="bogus")):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await channel.close()
    await conn.close()


async def test_a_deferred_trailing_stop_keeps_its_high_water_mark(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """A trailing stop deferred by a SELL in flight on its position is re-armed from PostgreSQL, whose mark
    lags the engine's (saved every few seconds): the re-armed stop keeps the mark it had (and PostgreSQL gets
    it), so it still fires at its level once the other SELL is gone."""
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.58", fraction="1")
    await insert_trigger(conn, "trg_trail", "TRAILING_STOP", trail="10", activation="0.5", fraction="1")
    standins.executor.auto_fill = False  # SELLs stay in flight until answered
    guard = (await make_guard(mark_flush_s=10.0)).guard
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.50", ask="0.70")  # the trailing stop activates: mark 0.50
    await standins.ingest.tick(bid="0.60", ask="0.70")  # mark 0.60 (level 0.54); the take-profit fires
    await eventually(lambda: len(standins.executor.sells) == 1)
    await eventually(lambda: (s := guard.engine.get("trg_trail")) is not None and s.high_water_mark == Decimal("0.60"))
    await standins.ingest.tick(bid="0.54", ask="0.70")  # crosses 0.54 while nothing is available: deferred
    await eventually(lambda: guard.firer.stats.deferred >= 1 and "trg_trail" in guard.engine)
    spec = guard.engine.get("trg_trail")
    assert spec is not None and spec.high_water_mark == Decimal("0.60")

    async def mark_saved() -> bool:  # the re-arm saves the mark it kept, after putting the stop back
        return (await trigger_row(conn, "trg_trail"))["high_water_mark"] == Decimal("0.60")

    await eventually(mark_saved)
    # the take-profit's SELL is killed unfilled: the 100 shares are still held
    await standins.executor.emit(ExecutorStandIn.event(standins.executor.sells[0], epb.ORDER_EVENT_TYPE_CANCELLED))

    async def tp_failed() -> bool:
        return (await trigger_row(conn, "trg_tp"))["state"] == "FAILED"

    await eventually(tp_failed)
    await standins.ingest.tick(bid="0.53", ask="0.70")  # below 0.60 × 0.9
    try:
        await eventually(lambda: len(standins.executor.sells) == 2)
        assert standins.executor.sells[1].size == "100"
    finally:
        await conn.close()
