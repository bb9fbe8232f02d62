"""Ingest's band feed waits for Redis to confirm its subscription before it reads the bands; a confirmation that never
comes (a stuck connection) is a failure like any other: the feed subscribes again and then follows guard's bands,
instead of waiting for ever with every tick going out (real Redis)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from common.fastredis import FastRedis
from common.retry import Backoff
from services.guard.adapters.band_publisher import BandPublisher
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec
from services.ingest.bandfeed import BandFeed
from services.ingest.tickgate import TickGate
from tests.guard.band_feeds import A
from tests.helpers import eventually
from tests.test_pubsub_confirmed_follow import LateSubscribes

pytestmark = pytest.mark.integration


async def test_a_band_subscription_never_confirmed_is_made_again(redis: Any, fast_redis: FastRedis) -> None:
    engine = Engine()
    engine.upsert(TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=Decimal("0.30")))
    await BandPublisher(fast_redis, lambda: engine, lambda: 1, lease_s=5.0).step()
    gate = TickGate(heartbeat_s=60.0)
    feed = BandFeed(LateSubscribes(redis, 0.0, lost=1), gate, lambda _assets: None, poll_s=0.05, confirm_s=0.3,
                    backoff=Backoff(0.01, 0.05))
    task = asyncio.create_task(feed.run())
    try:
        await eventually(lambda: feed.ready.is_set() and A in gate.bands, timeout_s=5.0,
                         message="the feed never read the bands after its first subscription was lost")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
