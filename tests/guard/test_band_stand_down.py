"""A guard that stops stops writing bands first, and, when the bands' meta is still its own, deletes it and asks
ingest's band feeds to trust no band (``BandPublisher.stand_down``): in a rollout the old process's bands, frozen
as it stops, or written onto the new process's (each write that finds another process's meta rewrites the hash
whole), no longer filter the ticks the new process reads; until the new bands land every tick goes out. Bands a
newer process wrote meanwhile are left alone (real Redis, a real guard, ingest's real band feed and gate)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common.band_reset import parse_invalidate
from common.bands import BANDS_CHANNEL, BANDS_META_KEY, BandMeta, parse_meta
from common.fastredis import FastRedis
from services.guard.adapters.band_publisher import BandPublisher
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tests.guard.band_feeds import PRICE, A, following
from tests.guard.conftest import GuardFactory
from tests.helpers import eventually

pytestmark = pytest.mark.integration


def _engine() -> Engine:
    engine = Engine()
    engine.upsert(TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=Decimal("0.30")))
    return engine


async def test_a_stopping_publisher_takes_its_bands_out_of_the_gates(redis: Any, fast_redis: FastRedis) -> None:
    gate = TickGate(heartbeat_s=3600)
    async with following(redis, gate):
        await eventually(lambda: gate.stats.loads >= 1)
        old = BandPublisher(fast_redis, _engine, lambda: 1, lease_s=5.0)
        await old.step()
        await eventually(lambda: gate.meta is not None and gate.meta.epoch == old.epoch and A in gate.bands)
        assert gate.admit(A, PRICE, top("0.50"), 1)  # the asset's first tick
        assert not gate.admit(A, PRICE, top("0.49"), 2)  # inside (0.30, ...): left out

        assert await old.stand_down()
        assert await redis.exists(BANDS_META_KEY) == 0
        await eventually(lambda: gate.admit(A, PRICE, top("0.48"), 3), message="the stopped guard's band still used")


async def test_bands_a_newer_process_wrote_are_left_alone(redis: Any, fast_redis: FastRedis) -> None:
    old = BandPublisher(fast_redis, _engine, lambda: 1, lease_s=5.0)
    await old.step()
    new = BandPublisher(fast_redis, _engine, lambda: 1, lease_s=5.0)
    await new.step()
    pubsub = redis.pubsub()
    await pubsub.subscribe(BANDS_CHANNEL)
    try:
        assert not await old.stand_down()
        meta = parse_meta(await redis.get(BANDS_META_KEY))
        assert meta is not None and meta.epoch == new.epoch
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        assert msg is None or parse_invalidate(msg["data"]) is None, "an invalidation of the newer process's bands"
    finally:
        await pubsub.aclose()


async def test_no_meta_or_one_not_understood_is_left_as_it_is(redis: Any, fast_redis: FastRedis) -> None:
    pub = BandPublisher(fast_redis, _engine, lambda: 1, lease_s=5.0)
    assert not await pub.stand_down()
    await redis.set(BANDS_META_KEY, b"not json")
    assert not await pub.stand_down()
    assert await redis.get(BANDS_META_KEY) == "not json"
    await redis.set(BANDS_META_KEY, BandMeta("other", 1, 1, 5.0).to_json())
    assert not await pub.stand_down()


async def test_a_guard_that_stops_takes_its_bands_out(redis: Any, make_guard: GuardFactory) -> None:
    running = await make_guard()
    await eventually(lambda: redis.exists(BANDS_META_KEY))
    meta = parse_meta(await redis.get(BANDS_META_KEY))
    assert meta is not None
    await running.stop()
    assert await redis.exists(BANDS_META_KEY) == 0
    assert all(t.done() for t in running.tasks)


async def test_the_stand_down_goes_before_the_servers_graceful_stop() -> None:
    """``wait_for_termination`` runs ``first`` before the graceful stop, which may wait the grace period for an open
    trigger-event stream; a failing ``first`` does not stop the shutdown."""
    from common.grpcserver import wait_for_termination

    order: list[str] = []

    class _Server:
        async def wait_for_termination(self) -> None:
            return None  # as when the server ended: the shutdown starts at once

    class _Srv:
        server = _Server()

        async def stop(self, grace_s: float) -> None:
            order.append("stop")

    async def first() -> None:
        order.append("first")
        raise RuntimeError("redis down")

    await wait_for_termination(_Srv(), 0.1, first=first)  # type: ignore[arg-type]
    assert order == ["first", "stop"]


async def test_a_guard_stands_down_once(redis: Any, make_guard: GuardFactory) -> None:
    running = await make_guard()
    await eventually(lambda: redis.exists(BANDS_META_KEY))
    await running.stand_down_bands()
    assert await redis.exists(BANDS_META_KEY) == 0 and running.bands_stood_down
    await redis.set(BANDS_META_KEY, BandMeta("next", 1, 1, 5.0).to_json())  # the next guard's
    await running.stop()
    assert parse_meta(await redis.get(BANDS_META_KEY)) == BandMeta("next", 1, 1, 5.0)
