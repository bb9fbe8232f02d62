"""A new guard process invalidates the bands before it takes its tick-log cursor (``common.band_reset``): it returns
only once every ingest band feed has made its gate trust no band and said so, or once the old lease has run out
(real Redis, ingest's real band feed and tick gate)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.band_reset import ACK_CHANNEL, ack_message, parse_ack, parse_invalidate
from common.bands import BANDS_CHANNEL, BANDS_KEY, BANDS_META_KEY, BandMeta, parse_meta
from common.fastredis import FastRedis
from common.storage import create_redis
from common.streams import PRICE_TICKS
from services.guard.adapters.band_reset import invalidate_bands
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tests.guard.band_feeds import PRICE, A, SlowPipelines, following, old_guards_narrowed_band
from tests.guard.conftest import GuardFactory
from tests.helpers import eventually
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

D = Decimal


@pytest.fixture
async def gate(redis: Any) -> AsyncIterator[TickGate]:
    """Ingest's gate following the bands through a real band feed on a slow Redis."""
    g = TickGate(heartbeat_s=3600)
    async with following(SlowPipelines(redis, 0.2), g):
        yield g


async def test_the_invalidation_returns_only_after_the_gate_trusts_the_old_band_no_more(
        redis: Any, fast_redis: FastRedis, gate: TickGate) -> None:
    """The feed reads and writes through a slow Redis: guard's wait ends only after its acknowledgement, which
    comes only after the gate dropped the old band. The 0.52 inside it, right after the return, goes out."""
    now = await old_guards_narrowed_band(fast_redis, gate)
    done = await invalidate_bands(redis, lease_s=5.0)
    assert gate.admit(A, PRICE, top("0.52"), now), "a tick after the cursor filtered with the old process's band"
    assert (done.subscribers, done.acks, done.timed_out) == (1, 1, False)
    assert await redis.exists(BANDS_META_KEY) == 0 and await redis.exists(BANDS_KEY) == 1  # the hash stays


async def test_without_a_band_feed_the_invalidation_returns_at_once(redis: Any) -> None:
    await redis.set(BANDS_META_KEY, BandMeta("old", 3, 1, 5.0).to_json())
    await redis.hset(BANDS_KEY, A, "-;0,,0.52,0,0.1,")
    started = time.monotonic()
    done = await invalidate_bands(redis, lease_s=5.0)
    assert (done.subscribers, done.acks, done.timed_out) == (0, 0, False)
    assert time.monotonic() - started < 1.0
    assert await redis.exists(BANDS_META_KEY) == 0 and await redis.exists(BANDS_KEY) == 1  # the hash stays


@pytest.mark.parametrize("old_lease_s", [0.3, None])
async def test_a_subscriber_that_never_acknowledges_is_waited_for_until_the_old_lease_ran_out(
        redis: Any, old_lease_s: float | None) -> None:
    """The bound is the old meta's lease (the configured one without a meta) plus the margin."""
    if old_lease_s is not None:
        await redis.set(BANDS_META_KEY, BandMeta("old", 3, 1, old_lease_s).to_json())
    pubsub = redis.pubsub()
    await pubsub.subscribe(BANDS_CHANNEL)
    try:
        started = time.monotonic()
        done = await invalidate_bands(redis, lease_s=0.3 if old_lease_s is None else 30.0, margin_s=0.2)
        took = time.monotonic() - started
    finally:
        await pubsub.aclose()
    assert (done.subscribers, done.acks, done.timed_out) == (1, 0, True)
    assert 0.5 <= took < 3.0


async def test_a_malformed_invalidation_is_counted_and_the_feed_goes_on(redis: Any, fast_redis: FastRedis) -> None:
    """Read as any message not understood (the bands are read again); a later invalidation is acknowledged."""
    gate = TickGate(heartbeat_s=3600)
    async with following(redis, gate) as feed:
        now = await old_guards_narrowed_band(fast_redis, gate)
        await redis.publish(BANDS_CHANNEL, b'{"invalidate": 5}')
        await eventually(lambda: feed.bad_invalidations == 1)
        await redis.delete(BANDS_KEY, BANDS_META_KEY)
        done = await invalidate_bands(redis, lease_s=5.0)  # the feed still follows the channel
        assert (done.subscribers, done.acks, done.timed_out) == (1, 1, False)
        assert gate.admit(A, PRICE, top("0.52"), now)


async def test_a_guard_start_invalidates_the_bands_a_band_feed_follows(
        redis: Any, fast_redis: FastRedis, gate: TickGate, make_guard: GuardFactory) -> None:
    """A previous process's narrowed band is trusted; a new guard starts: the feed acknowledged its invalidation,
    and the gate then follows the new process's bands."""
    await old_guards_narrowed_band(fast_redis, gate)
    old_epoch = gate.meta.epoch if gate.meta else ""
    pubsub = redis.pubsub()
    await pubsub.subscribe(ACK_CHANNEL)
    try:
        await make_guard(tick_source="log", band_beat_s=0.2, band_lease_s=1.0)
        acks = []
        for _ in range(4):  # the subscription's confirmation reads as None too
            if (msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
                acks.append(parse_ack(msg["data"]))
    finally:
        await pubsub.aclose()
    assert len(acks) == 1 and acks[0] is not None, "the feed acknowledged the new guard's invalidation once"
    await eventually(lambda: gate.meta is not None and gate.meta.epoch != old_epoch)


async def test_a_band_feed_of_another_database_acknowledges_without_losing_its_bands(redis_url: str) -> None:
    """Channels are shared by a Redis server's databases: a feed of another database (another deployment, or another
    test's stack) receives the invalidation too. It keeps its own bands (its meta was not deleted) and its
    acknowledgement reaches guard, which does not wait out the lease for it."""
    other_url = re.sub(r"db=\d+", "db=7", redis_url) if "db=" in redis_url else re.sub(r"/\d+$", "/7", redis_url)
    assert other_url != redis_url
    other = create_redis(other_url)
    ours = create_redis(redis_url)
    other_fast = FastRedis(other_url)
    try:
        await other.flushdb()
        gate = TickGate(heartbeat_s=3600)
        async with following(other, gate):
            now = await old_guards_narrowed_band(other_fast, gate)
            epoch = gate.meta.epoch if gate.meta else ""
            started = time.monotonic()
            done = await invalidate_bands(ours, lease_s=5.0)
            assert (done.subscribers, done.acks, done.timed_out) == (1, 1, False)
            assert time.monotonic() - started < 2.0
            await eventually(lambda: gate.meta is not None and gate.meta.epoch == epoch)
            assert not gate.admit(A, PRICE, top("0.52"), now), "the other deployment's band still in force"
    finally:
        await other.flushdb()
        await other.aclose()
        await ours.aclose()
        other_fast.close()


async def test_a_guard_start_takes_its_cursor_only_after_the_acknowledgement(
        redis_url: str, make_guard: GuardFactory) -> None:
    """A band feed stand-in logs a tick when the invalidation reaches it, then acknowledges: a guard that took its
    cursor after the acknowledgement finds that tick at the log's end, and its first bands say so (``through_ns``); one
    that took it before would say less."""
    raw = aioredis.from_url(redis_url)  # bytes: the tick log's payloads
    pubsub = raw.pubsub()
    await pubsub.subscribe(BANDS_CHANNEL)
    await eventually(lambda: pubsub.subscribed)
    stamp = time.time_ns()

    async def feed() -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            token = parse_invalidate(msg["data"]) if msg is not None else None
            if token is not None:
                tick = mpb.PriceTick(asset_id="a", kind=PRICE, received_time_ns=stamp)
                await raw.xadd(PRICE_TICKS, {b"p": tick.SerializeToString()})  # after the delete, before the ack
                await raw.publish(ACK_CHANNEL, ack_message(token, "stand-in"))
                return

    task = asyncio.create_task(feed())
    try:
        await make_guard(tick_source="log", band_beat_s=0.2, band_lease_s=30.0)
        await asyncio.wait_for(task, 5.0)
        meta = parse_meta(await raw.get(BANDS_META_KEY))
        assert meta is not None and meta.through_ns >= stamp, "the cursor was taken before the acknowledgement"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()
        await raw.delete(PRICE_TICKS)
        await raw.aclose()
