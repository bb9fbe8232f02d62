"""``tt:triggers:version`` lost and started again lower (Redis restarted empty, or failed over to a replica behind;
the subscription comes back by itself): a notice lost after that is still a version gap, and guard resyncs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest

from services.guard.trigger_sync import TRIGGERS_CHANNEL, TriggerSync
from tests.guard.conftest import GuardFactory
from tests.guard.standins import StandIns, add_market, db, insert_trigger, publish_change, set_position, wait_connected
from tests.helpers import eventually

pytestmark = pytest.mark.integration

VERSION = "tt:triggers:version"


async def test_a_notice_lost_after_the_version_went_back_is_a_gap(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await add_market(redis)
    await redis.set(VERSION, 1000)
    running = await make_guard(trigger_check_s=600.0)  # the periodic check is the net behind the notices: not here
    guard = running.guard
    await wait_connected(standins.ingest)
    assert running.sync.version == 1000

    await redis.delete(VERSION)  # Redis restarted without its data: the versions start again from 1
    await insert_trigger(conn, "trg_new", "STOP_LOSS", price="0.30", fraction="1")
    await redis.incr(VERSION)  # the stop-loss's create, announced while guard's subscription was down: lost
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.90", fraction="1")
    await publish_change(redis, "trg_tp")  # the next change: version 2, received
    await eventually(lambda: "trg_tp" in guard.engine.ids())

    await eventually(lambda: "trg_new" in guard.engine.ids(), timeout_s=3)
    await standins.ingest.tick(bid="0.20", ask="0.22")  # through the 0.30 stop-loss
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    await conn.close()


class _Target:
    """The engine side of a trigger sync."""

    def __init__(self) -> None:
        self.reloads: list[str] = []
        self.resyncs = 0

    async def reload(self, trigger_id: str, *, observed: bool = True) -> None:
        self.reloads.append(trigger_id)

    async def reload_many(self, trigger_ids: list[str]) -> None:
        self.reloads.extend(trigger_ids)

    async def resync(self) -> tuple[int, int]:
        self.resyncs += 1
        return 0, 0


async def test_a_notice_older_than_the_load_is_reloaded_without_a_resync(redis: Any) -> None:
    target = _Target()
    await redis.set(VERSION, 50)
    sync = TriggerSync(redis, target, check_s=600.0)
    following = asyncio.create_task(sync.run())
    try:
        await asyncio.wait_for(sync.ready.wait(), 5)
        # a notice sent before the load read the version (its change is in the load): delivered after it
        await redis.publish(TRIGGERS_CHANNEL, orjson.dumps({"triggerId": "trg_old", "op": "upsert", "version": 49}))
        await publish_change(redis, "trg_next")
        await eventually(lambda: target.reloads == ["trg_old", "trg_next"])
        assert (target.resyncs, sync.gaps, sync.version) == (1, 0, 51)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
