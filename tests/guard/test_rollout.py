"""A rollout runs two guards for a while (the new one started before the old one stops): what one of them changes
(copy exits it registers or cancels, the trailing marks it saves at its stop) reaches the other, so nothing is
left unwatched, or watched at a lower mark, once the old one is gone."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from typing import Any

import pytest

from services.guard.adapters.guard_notices import GuardNotices
from services.guard.trigger_sync import TriggerSync
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    BUY,
    SELL,
    StandIns,
    add_market,
    copy_fill,
    db,
    insert_subscription,
    insert_trigger,
    publish_change,
    set_position,
    trigger_row,
)
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def _armed_exits(conn: Any) -> set[str]:
    rows = await (await conn.execute("SELECT id FROM triggers WHERE source = 'COPY' AND state = 'ARMED'")).fetchall()
    return {r["id"] for r in rows}


async def test_exits_registered_by_the_old_guard_are_watched_by_the_new_one(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis)
    old = await make_guard()
    new = await make_guard()
    await eventually(lambda: standins.ingest.connected == 2)

    # the copy BUY, as both guards' order consumers read it: the old one registers, the new one only resizes
    await set_position(conn, "100", "0.40")
    fill = copy_fill("co_buy1", BUY, filled="100", price="0.40")
    await old.guard.on_order_event(fill)
    await new.guard.on_order_event(fill)
    exit_ids = await _armed_exits(conn)
    assert exit_ids and exit_ids <= old.guard.engine.ids()
    await eventually(lambda: exit_ids <= new.guard.engine.ids())

    await old.stop()
    await standins.ingest.tick(bid="0.20", ask="0.22")  # through the 0.30 stop-loss
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    await conn.close()


async def test_exits_the_other_guard_cancelled_leave_this_ones_engine(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis)
    first = await make_guard()
    second = await make_guard()
    await set_position(conn, "100", "0.40")
    fill = copy_fill("co_buy1", BUY, filled="100", price="0.40")
    await first.guard.on_order_event(fill)  # registers and arms
    exit_ids = await _armed_exits(conn)
    assert exit_ids and exit_ids <= first.guard.engine.ids()

    await set_position(conn, "0", "0.40")  # sold: the second guard reads the SELL first and cancels the exits
    await second.guard.on_order_event(copy_fill("co_sell1", SELL, filled="100", price="0.45"))
    assert not await _armed_exits(conn)
    await eventually(lambda: not exit_ids & first.guard.engine.ids())
    await conn.close()


async def test_a_rolled_guard_fires_on_the_mark_the_old_guard_tracked(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await add_market(redis, min_size="5")
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", activation="0.5", fraction="1")
    old = await make_guard(mark_flush_s=60.0)  # no periodic flush in the test: the stop's flush writes the mark
    await eventually(lambda: standins.ingest.connected == 1)
    await standins.ingest.tick(bid="0.6", ask="0.62")
    await standins.ingest.tick(bid="0.8", ask="0.82")  # the peak: stop level 0.72

    def mark(running: Any) -> Decimal:
        spec = running.guard.engine.get("trg_tr")
        return spec.high_water_mark if spec is not None else Decimal(0)

    await eventually(lambda: mark(old) == Decimal("0.8"))
    new = await make_guard(mark_flush_s=60.0)  # loads mark 0: the old one has not saved its mark yet
    await eventually(lambda: standins.ingest.connected == 2)
    await old.stop()  # its final flush writes 0.8, and it says so
    assert (await trigger_row(conn, "trg_tr"))["high_water_mark"] == Decimal("0.8")
    await eventually(lambda: mark(new) == Decimal("0.8"))

    await standins.ingest.tick(bid="0.70", ask="0.71")  # below 0.8 x 0.9 = 0.72
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    await conn.close()


class _Target:
    """The engine side of a trigger sync."""

    def __init__(self) -> None:
        self.reloads: list[tuple[str, bool]] = []
        self.resyncs = 0

    async def reload(self, trigger_id: str, *, observed: bool = True) -> None:
        self.reloads.append((trigger_id, observed))

    async def reload_many(self, trigger_ids: list[str]) -> None:
        self.reloads.extend((tid, False) for tid in trigger_ids)

    async def resync(self) -> tuple[int, int]:
        self.resyncs += 1
        return 0, 0


async def test_a_guard_reloads_the_other_guards_changes_without_an_event_and_skips_its_own(redis: Any) -> None:
    target = _Target()
    mine, other = GuardNotices(redis), GuardNotices(redis)
    sync = TriggerSync(redis, target, check_s=60.0, token=mine.token)
    following = asyncio.create_task(sync.run())
    try:
        await asyncio.wait_for(sync.ready.wait(), 5)
        assert target.resyncs == 1  # the load when it subscribed
        mine.announce(["trg_mine"])
        await mine.step()
        other.announce(["trg_other"])
        await other.step()
        await publish_change(redis, "trg_control")
        await other.marks_saved()  # the other stopped: its stored marks changed
        await eventually(lambda: target.resyncs == 2)
        assert target.reloads == [("trg_other", False), ("trg_control", True)]
        assert sync.gaps == 0
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


class _FlakyRedis:
    """Refuses the first script call."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.failures = 1

    async def eval(self, *args: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis went away")
        return await self.redis.eval(*args)


async def test_a_notice_not_sent_stays_pending_and_goes_out_with_the_next_step(redis: Any) -> None:
    notices = GuardNotices(_FlakyRedis(redis))
    notices.announce(["trg_a", "trg_b"])
    with pytest.raises(ConnectionError):
        await notices.step()
    assert list(notices.pending) == ["trg_a", "trg_b"]
    await notices.step()
    assert (notices.pending, notices.sent) == ({}, 2)
    assert await redis.get("tt:triggers:version") == "1"  # one message (one version) for the batch


async def test_a_fan_outs_exits_are_a_few_messages_not_one_per_trigger(redis: Any) -> None:
    """Exits registered for thousands of positions at once: one message (one version) per 500 ids, each reloaded
    by the other guards in batched reads."""
    target = _Target()
    mine, other = GuardNotices(redis), GuardNotices(redis)
    sync = TriggerSync(redis, target, check_s=60.0, token=mine.token)
    following = asyncio.create_task(sync.run())
    try:
        await asyncio.wait_for(sync.ready.wait(), 5)
        ids = [f"trg_{i}" for i in range(1200)]
        other.announce(ids)
        await other.step()
        await eventually(lambda: len(target.reloads) == 1200)
        assert [tid for tid, _observed in target.reloads] == ids and not any(o for _t, o in target.reloads)
        assert (await redis.get("tt:triggers:version"), sync.gaps, target.resyncs) == ("3", 0, 1)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
