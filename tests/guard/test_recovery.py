"""The tick log read directly, catch-up from stored books, SELLs deferred while another settles, settings."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.config import ConfigError
from common.marketstate import BOOK_FEED_KEY, BookSnapshot, FeedBeat, write_book
from services.guard.config import Settings
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    ExecutorStandIn,
    StandIns,
    add_market,
    db,
    insert_trigger,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.helpers import INTERNAL_ENV, INTERNAL_TOKEN, eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


async def _book(redis: Any, asset_id: str, bid: str, ask: str, *, age_s: float = 0.0) -> None:
    updated = int((time.time() - age_s) * 1000)
    await write_book(redis, BookSnapshot(asset_id, CONDITION, ((Decimal(bid), Decimal(100)),),
                                         ((Decimal(ask), Decimal(100)),), Decimal("0.01"), updated, updated))


async def test_log_source_and_catch_up_from_stored_books(db_url: str, redis: Any, standins: StandIns,
                                                         make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    for asset in (ASSET, "book-fresh", "book-old"):
        await set_position(conn, "10", asset_id=asset)
        await add_market(redis, asset, min_size="1")
    await insert_trigger(conn, "trg_tick", "STOP_LOSS", price="0.3", fraction="1")
    await insert_trigger(conn, "trg_fresh", "STOP_LOSS", price="0.3", fraction="1", asset_id="book-fresh")
    await insert_trigger(conn, "trg_old", "STOP_LOSS", price="0.3", fraction="1", asset_id="book-old")
    await _book(redis, "book-fresh", "0.25", "0.3")  # crossed while guard was down: fires at start
    await _book(redis, "book-old", "0.25", "0.3", age_s=120)  # too old to trust: held
    running = await make_guard(tick_source="log")
    await eventually(lambda: {o.trigger_id for o in standins.executor.sells} == {"trg_fresh"})

    async def held() -> bool:
        return (await trigger_row(conn, "trg_old"))["state_reason"] == "BOOK_STALE"

    await eventually(held)
    # the log feed is live once a tick gets through; then a crossing tick fires
    seen = running.guard.stats.ticks

    async def live() -> bool:
        await standins.ingest.tick(bid="0.5", ask="0.6")
        return running.guard.stats.ticks > seen

    await eventually(live, interval_s=0.1)
    assert standins.ingest.opened == 0  # no gRPC stream: the log was read directly
    await standins.ingest.tick(bid="0.29", ask="0.3")
    await eventually(lambda: len(standins.executor.sells) == 2)
    assert standins.executor.sells[1].trigger_id == "trg_tick"
    assert (await trigger_row(conn, "trg_old"))["state"] == "ARMED"
    await conn.close()


async def test_catch_up_trusts_only_books_the_venue_confirmed(db_url: str, redis: Any, standins: StandIns,
                                                             make_guard: GuardFactory) -> None:
    """A book of a feed session that is over (stored before a restart) or never snapshotted holds its triggers
    however recent its write; a quiet book of the live session is confirmed by the feed's beat and fires."""
    conn = await db(db_url)
    now = int(time.time() * 1000)
    books = {"gone-session": (True, "before.1", now), "never-snapshotted": (False, "live.1", now),
             "quiet-live": (True, "live.1", now - 120_000)}
    for asset, (snapshot, session, updated) in books.items():
        await set_position(conn, "10", asset_id=asset)
        await add_market(redis, asset, min_size="1")
        await insert_trigger(conn, f"trg_{asset}", "STOP_LOSS", price="0.3", fraction="1", asset_id=asset)
        await write_book(redis, BookSnapshot(asset, CONDITION, ((Decimal("0.25"), Decimal(100)),),
                                             ((Decimal("0.3"), Decimal(100)),), Decimal("0.01"), updated, updated,
                                             None, snapshot, session))
    await redis.set(BOOK_FEED_KEY, FeedBeat("live.1", now).to_json())
    await make_guard(tick_source="log")
    await eventually(lambda: {o.trigger_id for o in standins.executor.sells} == {"trg_quiet-live"})

    async def held() -> bool:
        return all([(await trigger_row(conn, f"trg_{a}"))["state_reason"] == "BOOK_STALE"
                    for a in ("gone-session", "never-snapshotted")])

    await eventually(held)
    assert [o.trigger_id for o in standins.executor.sells] == ["trg_quiet-live"]
    await conn.close()


async def test_a_sell_waits_for_the_one_in_flight_instead_of_giving_up(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "10")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.6", fraction="1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.3", fraction="1")
    standins.executor.auto_fill = False
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.65", ask="0.7")
    await eventually(lambda: len(standins.executor.sells) == 1)  # TP: all 10 shares, not filled yet
    await _book(redis, ASSET, "0.25", "0.3")
    await standins.ingest.tick(bid="0.25", ask="0.3")  # the stop crosses: nothing left to sell yet
    await eventually(lambda: running.guard.firer.stats.deferred >= 2)  # re-checked from the stored book
    assert len(standins.executor.sells) == 1
    assert (await trigger_row(conn, "trg_sl"))["state"] == "ARMED"
    # the TP's FAK is killed with nothing filled: the stop now sells the whole position
    tp_order = standins.executor.sells[0]
    await standins.executor.emit(ExecutorStandIn.event(tp_order, epb.ORDER_EVENT_TYPE_CANCELLED, reason="NO_MATCH"))
    await _book(redis, ASSET, "0.25", "0.3")
    await eventually(lambda: len(standins.executor.sells) == 2)
    assert (standins.executor.sells[1].trigger_id, standins.executor.sells[1].size) == ("trg_sl", "10")
    tp = await trigger_row(conn, "trg_tp")
    assert (tp["state"], tp["state_reason"]) == ("FAILED", "NO_MATCH")
    await conn.close()


BASE_ENV = {"DATABASE_URL": "postgresql://u@localhost/db", "REDIS_URL": "redis://localhost:6379/0",
            **INTERNAL_ENV}


def test_settings_from_env() -> None:
    s = Settings.from_env({**BASE_ENV, "TT_GUARD_GRPC_PORT": "0", "TT_EXECUTOR_GRPC_TARGET": "exec:1",
                           "TT_TUNE_GUARD_TICK_MAX_AGE_S": "1.5", "TT_GUARD_CRASH_AFTER": "decision"})
    assert (s.grpc_port, s.executor_target, s.tuning.tick_max_age_s, s.crash_after, s.tuning.tick_source) == (
        0, "exec:1", 1.5, "decision", "log")
    assert s.security.tokens[0].value == INTERNAL_TOKEN and INTERNAL_TOKEN not in repr(s)
    assert s.ingest_target == "127.0.0.1:50051" and s.control_target == "127.0.0.1:50055"
    assert (s.tuning.orders_source, s.tuning.orders_gather_s) == ("grpc", 0.025)
    s = Settings.from_env({**BASE_ENV, "TT_TUNE_GUARD_ORDERS_SOURCE": "LOG", "TT_TUNE_GUARD_ORDERS_GATHER_S": "0"})
    assert (s.tuning.orders_source, s.tuning.orders_gather_s) == ("log", 0.0)


@pytest.mark.parametrize(("name", "value"), [
    ("TT_TUNE_GUARD_TICK_MAX_AGE_S", "0"), ("TT_TUNE_GUARD_TICK_MAX_AGE_S", "abc"), ("TT_GUARD_CRASH_AFTER", "later"),
    ("TT_TUNE_GUARD_ORDERS_START", "middle"), ("TT_TUNE_GUARD_TICK_SOURCE", "carrier-pigeon"),
    ("TT_TUNE_GUARD_FIRE_CONCURRENCY", "50"), ("TT_GUARD_GRPC_PORT", "70000"), ("TT_INTERNAL_TOKEN", "short"),
    ("TT_TUNE_GUARD_MAX_SLIPPAGE_BPS", "-1"), ("TT_TUNE_GUARD_ORDERS_SOURCE", "pigeon"),
    ("TT_TUNE_GUARD_ORDERS_GATHER_S", "-1"), ("TT_TUNE_GUARD_BAND_LEASE_S", "2"),
    ("TT_GUARD_TICK_MAX_AGE_S", "1"),  # its former name: refused, not silently ignored
])
def test_invalid_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE_ENV, name: value})
    assert name.split("_")[-1].lower() in str(err.value).lower() or name in str(err.value)
