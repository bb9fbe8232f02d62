"""Review of the bands' invalidation at a guard start (``common.band_reset``): real Redis, real band publisher,
ingest's real band feed and tick gate.

In a rollout the previous guard is still writing when the new one invalidates. The invalidation deletes the hash
with the meta. The previous process's next write is then a change write (only the
bands that changed) onto an empty hash, under its own epoch: ingest reads that hash whole and trusts it, so every
asset the write did not carry has no band, which the gate reads as "no armed trigger" and leaves its ticks out,
until the previous process's rewrite or the new process's first bands land. Before the invalidation the hash was
always one process's complete set (docs/architecture.md, the rollout paragraph)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from common.bands import BANDS_CHANNEL, BandMessage, BandMeta
from common.fastredis import FastRedis
from services.guard.adapters.band_publisher import BandPublisher
from services.guard.adapters.band_reset import invalidate_bands
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec
from services.ingest.bandfeed import BandFeed
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tests.guard.band_feeds import MS, PRICE, A, SlowPipelines, following, old_guards_narrowed_band
from tests.helpers import eventually

pytestmark = pytest.mark.integration

D = Decimal


@pytest.fixture
async def gate(redis: Any) -> AsyncIterator[TickGate]:
    """Ingest's gate following the bands in Redis through the real band feed."""
    g = TickGate(heartbeat_s=3600)
    async with following(redis, g):
        yield g


async def test_an_old_guards_write_after_the_invalidation_leaves_no_incomplete_set_of_bands_in_force(
        redis: Any, fast_redis: FastRedis, gate: TickGate) -> None:
    """The old guard holds a stop at 0.40 on A; a new guard invalidates the bands; the old guard's next beat (no
    band changed) lands before anything else. The bid 0.39 crosses the old guard's stop: it must go out, as it did
    before the invalidation existed (the old hash stayed whole under a lapsed or foreign meta). Here the gate
    trusts the old epoch's now empty hash and leaves it out as an asset without a trigger: should the bid come back
    above 0.40 before the rewrite lands, the recheck of the current book finds nothing and the stop never sells."""
    engine = Engine()
    engine.upsert(TriggerSpec("sl", A, Kind.STOP_LOSS, trigger_price=D("0.40")))
    old = BandPublisher(fast_redis, lambda: engine, lambda: 1, lease_s=5.0)
    await eventually(lambda: gate.stats.loads >= 1)  # the feed has subscribed
    await old.step()
    await eventually(lambda: gate.meta is not None and gate.meta.epoch == old.epoch and A in gate.bands)
    now = time.time_ns()
    assert gate.admit(A, PRICE, top("0.50"), now)  # the asset's first tick
    assert not gate.admit(A, PRICE, top("0.49"), now + MS)  # inside the old band

    done = await invalidate_bands(redis, lease_s=5.0)  # a new guard starts (a rollout: the old one still runs)
    assert (done.subscribers, done.acks) == (1, 1)
    assert gate.meta is None

    await old.step()  # the old guard's beat: nothing changed, it carries no band
    await eventually(lambda: gate.meta is not None and gate.meta.seq == old.seq)
    assert gate.admit(A, PRICE, top("0.39"), now + 2 * MS), "a stop-loss crossing left out: A has no band in force"


class _FeedDroppedFirst:
    """Guard's Redis client, where the band feed's subscription drops (its connection killed) in the MULTI of the
    invalidation, just before it: the PUBLISH does not count the feed, which reconnects a moment later."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._client.pipeline(*args, **kwargs)
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        execute = pipe.execute

        async def without_the_kill(*a: Any, **kw: Any) -> Any:
            return (await execute(*a, **kw))[1:]

        pipe.execute = without_the_kill
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_a_band_feed_that_reconnects_around_the_invalidation_does_not_trust_the_old_band(
        redis: Any, fast_redis: FastRedis, gate: TickGate) -> None:
    """The old guard's trailing stop (10 %, activating at 0.52) on A; the 0.53 it logged and never read narrows the
    band to (0.477, 0.53]. The feed's connection drops just before the invalidation, which so reaches no feed and
    returns at once: the new guard takes its cursor. Once the feed follows the channel again, the gate must trust
    no old band (it read them again after the reconnect): the 0.52 after the cursor, which activates the new
    guard's stop, goes out. (Passes: redis-py surfaces the dropped connection to the feed, which reads again.)"""
    now = await old_guards_narrowed_band(fast_redis, gate) - 3 * MS
    old = gate.meta  # the old guard's last write
    assert old is not None

    done = await invalidate_bands(_FeedDroppedFirst(redis), lease_s=5.0)
    assert done.subscribers == 0

    # the feed follows the channel again (the new guard's cursor is taken by now): a message it has already (the
    # old guard's last one again) until one is handled, after the reconnect
    seen = gate.stats.messages
    repeat = BandMessage(BandMeta(old.epoch, old.seq, 1, 5.0), {}).to_json()

    async def repeating() -> None:
        while True:
            await redis.publish(BANDS_CHANNEL, repeat)
            await asyncio.sleep(0.02)

    repeater = asyncio.create_task(repeating())
    try:
        await eventually(lambda: gate.stats.messages > seen)
    finally:
        repeater.cancel()
        await asyncio.gather(repeater, return_exceptions=True)
    assert gate.admit(A, PRICE, top("0.52"), now + 3 * MS), "a tick after the cursor filtered with the old band"


def _holds(gate: TickGate, epoch: str) -> bool:
    """The gate trusts the bands of ``epoch``, A's among them."""
    return gate.meta is not None and gate.meta.epoch == epoch and A in gate.bands


async def test_the_invalidation_waits_for_every_band_feed_not_the_first(
        redis: Any, fast_redis: FastRedis, gate: TickGate) -> None:
    """Two ingest processes follow the bands; the second reads and writes through a slow Redis. Guard returns only
    once both gates trust the old narrowed band no more."""
    slow = TickGate(heartbeat_s=3600)
    feed = BandFeed(SlowPipelines(redis, 0.3), slow, lambda _assets: None, poll_s=0.05)
    task = asyncio.create_task(feed.run())
    try:
        engine = Engine()
        engine.upsert(TriggerSpec("sl", A, Kind.STOP_LOSS, trigger_price=D("0.40")))
        old = BandPublisher(fast_redis, lambda: engine, lambda: 1, lease_s=5.0)
        await eventually(lambda: gate.stats.loads >= 1 and slow.stats.loads >= 1)  # both have subscribed
        await old.step()
        await eventually(lambda: _holds(gate, old.epoch) and _holds(slow, old.epoch))
        now = time.time_ns()
        for g in (gate, slow):
            assert g.admit(A, PRICE, top("0.50"), now)  # the asset's first tick
            assert not g.admit(A, PRICE, top("0.49"), now + MS)  # inside the old band
        done = await invalidate_bands(redis, lease_s=5.0)
        assert (done.subscribers, done.acks, done.timed_out) == (2, 2, False)
        assert gate.meta is None and slow.meta is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
